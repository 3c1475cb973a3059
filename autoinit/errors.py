"""User-facing errors: each carries one line that names the problem and the fix.

The CLI turns any :class:`AutoinitError` into ``error: <message>`` and exit status 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AutoinitError(Exception):
    """Base class of the errors a user can fix by changing their input."""


class DataError(AutoinitError, ValueError):
    """The data (a CSV file, tensors, a DataLoader) cannot be used as given."""


class ConfigError(AutoinitError, ValueError):
    """An option is invalid: an unknown name, a bad budget, an impossible search space."""


class NoRecommendation(ConfigError):
    """The search ran, but no configuration trained on every seed: there is nothing to recommend.

    ``recommendation`` holds the evidence (every config's results and why each diverged), and the
    message says what to try. The study keeps it, so ``show`` and the report say the same.
    """

    def __init__(self, recommendation: object, message: str) -> None:
        super().__init__(message)
        self.recommendation = recommendation


class StorageError(AutoinitError):
    """The study storage cannot be opened, or holds a study made on other data."""


def unknown_name(kind: str, name: object, valid: Iterable[str]) -> ConfigError:
    """Build the error for an unknown registry name, listing the valid ones and the nearest."""
    choices = sorted(set(valid))
    nearest = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.5)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    return ConfigError(f"unknown {kind} {name!r}.{hint} Valid names: {', '.join(choices)}.")
