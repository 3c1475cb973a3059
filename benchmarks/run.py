"""Run the benchmarks, print a table and write the figures as JSON.

Usage::

    python -m benchmarks.run            # the full run (about 5 minutes on 2 idle cores)
    python -m benchmarks.run --quick    # the CI smoke run (under 2 minutes)
    python -m benchmarks.run --only overhead,guard --output /tmp/bench.json
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from benchmarks.common import timed

SECTIONS = (
    "overhead", "guard", "efficiency", "scaling", "parallel", "known", "threads", "population",
    "cost",
)  # fmt: skip
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run for CI")
    parser.add_argument(
        "--only", default=",".join(SECTIONS),
        help=f"comma-separated sections (default: all: {','.join(SECTIONS)})",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=None,
        help="the JSON file (default: benchmarks/results/latest.json, or quick.json with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="where the SQLite and CSV files are made (default: the system's temp folder)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown or not args.sections:
        names = ", ".join(map(repr, unknown))
        parser.error(f"unknown section(s) {names}; valid: {', '.join(SECTIONS)}.")
    if args.output is None:
        args.output = RESULTS / ("quick.json" if args.quick else "latest.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    logging.getLogger("autoinit").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    report: dict[str, Any] = {"meta": meta(args), "sections": {}}
    with tempfile.TemporaryDirectory(prefix="autoinit-bench-", dir=args.workdir) as tmp:
        for name in args.sections:
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            workdir = Path(tmp) / name
            workdir.mkdir()
            module = importlib.import_module(f"benchmarks.{name}")
            load = os.getloadavg()[0]  # other programs' work skews timings; keep it on record
            section, seconds = timed(module.run, args.quick, workdir)
            report["sections"][name] = {"seconds": seconds, "load_before": load, **section}
            print(f"[{name}] done in {seconds:.1f} s", file=sys.stderr, flush=True)
    report["meta"]["seconds"] = sum(s["seconds"] for s in report["sections"].values())
    report = tidy(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwritten to {args.output}")
    return 0


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
        "quick": args.quick,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
    }


def tidy(value: Any) -> Any:
    """JSON-ready: floats to 4 significant digits, non-finite floats to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else None
    return value


def table(report: dict[str, Any]) -> str:
    """Each section's scalar figures, then its targets with ok/MISSED."""
    lines = [f"{'section':<11} {'figure':<46} {'value':>12}  target"]
    for name, section in report["sections"].items():
        figures = section["figures"].items()
        rows = [(k, v, "") for k, v in figures if isinstance(v, (int, float, str))]
        rows += [
            (t["figure"], t["value"], f"{t['target']}  {'ok' if t['met'] else 'MISSED'}")
            for t in section["targets"]
        ]
        for figure, value, goal in rows:
            lines.append(f"{name:<11} {figure:<46} {value!s:>12}  {goal}".rstrip())
        lines.append(f"{name:<11} {'seconds':<46} {section['seconds']!s:>12}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
