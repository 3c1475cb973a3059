"""Work that exactly one process of a study must do: queueing the baselines, the confirmation.

A claim is a row of Optuna's ``study_system_attributes`` table, whose ``(study_id, key)`` pair is
unique: an ``INSERT`` succeeds for one process and fails for every other, atomically, in SQLite
and in PostgreSQL alike. The row names its holder (host and PID) and a heartbeat time that the
holder refreshes; a claim whose holder died (a dead PID on this host, or a heartbeat older than
:data:`STALE_SECONDS`) is taken over with a compare-and-swap ``UPDATE``, so a killed claimant
never blocks a study. Storages without a database (in memory) have a single process: every
claim succeeds there.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy

from autoinit.study import HEARTBEAT_SECONDS, pid_alive, rdb_backend

PREFIX = "autoinit:claim:"
STALE_SECONDS = 3 * HEARTBEAT_SECONDS  # Optuna's grace period for a trial's heartbeat, too


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time(), "done": False}


def _table() -> sqlalchemy.TableClause:
    return sqlalchemy.table(
        "study_system_attributes",
        sqlalchemy.column("study_id"), sqlalchemy.column("key"), sqlalchemy.column("value_json"),
    )  # fmt: skip


def holder(study: optuna.Study, name: str) -> dict[str, Any] | None:
    """The claim's record (host, pid, beat, done), or None when nobody has claimed it."""
    backend = rdb_backend(study)
    if backend is None:
        return None
    table = _table()
    with backend.engine.connect() as connection:
        row = connection.execute(
            sqlalchemy.select(table.c.value_json).where(
                table.c.study_id == study._study_id, table.c.key == PREFIX + name
            )
        ).first()
    return json.loads(row[0]) if row else None


def is_stale(record: dict[str, Any], *, now: float | None = None) -> bool:
    """A claim left by a process that is gone: dead on this host, or silent for too long."""
    if record.get("done"):
        return False
    if record.get("host") == socket.gethostname() and not pid_alive(record.get("pid")):
        return True
    return (now or time.time()) - float(record.get("beat", 0)) > STALE_SECONDS


def try_claim(study: optuna.Study, name: str) -> bool:
    """Claim ``name`` for this process; True when it is ours (new, or taken over from the dead)."""
    backend = rdb_backend(study)
    if backend is None:
        return True
    table, key, mine = _table(), PREFIX + name, json.dumps(_me())
    try:
        with backend.engine.begin() as connection:
            connection.execute(sqlalchemy.insert(table).values(
                study_id=study._study_id, key=key, value_json=mine))  # fmt: skip
        return True
    except sqlalchemy.exc.IntegrityError:
        pass
    with backend.engine.begin() as connection:
        row = connection.execute(sqlalchemy.select(table.c.value_json).where(
            table.c.study_id == study._study_id, table.c.key == key)).first()  # fmt: skip
        if row is None or not is_stale(json.loads(row[0])):
            return False
        taken = connection.execute(  # compare-and-swap: only one of several takers wins
            sqlalchemy.update(table)
            .where(table.c.study_id == study._study_id, table.c.key == key,
                   table.c.value_json == row[0])
            .values(value_json=mine)
        )  # fmt: skip
        return taken.rowcount == 1


def _set(study: optuna.Study, name: str, **changes: Any) -> None:
    backend = rdb_backend(study)
    if backend is None:
        return
    table, key = _table(), PREFIX + name
    record = {**_me(), **changes}
    with backend.engine.begin() as connection:
        connection.execute(sqlalchemy.update(table).where(
            table.c.study_id == study._study_id, table.c.key == key
        ).values(value_json=json.dumps(record)))  # fmt: skip


def release(study: optuna.Study, name: str) -> None:
    """Give the claim up unfinished, so another process can take it at once."""
    backend = rdb_backend(study)
    if backend is None:
        return
    table = _table()
    with backend.engine.begin() as connection:
        connection.execute(sqlalchemy.delete(table).where(
            table.c.study_id == study._study_id, table.c.key == PREFIX + name))  # fmt: skip


@contextlib.contextmanager
def holding(
    study: optuna.Study, name: str, *, beat_every: float = HEARTBEAT_SECONDS
) -> Iterator[None]:
    """Keep a claim alive (a heartbeat thread) while the work runs; mark it done after it.

    If the work raises (Ctrl+C, SIGTERM, a bug), the claim is released for another process.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(beat_every):
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                _set(study, name)

    thread = threading.Thread(target=beat, name=f"autoinit-claim-{name}", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        thread.join()
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            release(study, name)
        raise
    stop.set()
    thread.join()
    _set(study, name, done=True)
