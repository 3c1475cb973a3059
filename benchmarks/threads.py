"""7. Torch threads: why a worker trains with one thread.

The same trial (a 8 x 64 MLP on scikit-learn's digits, Adam) with 1 and with 2 torch threads, on
an idle machine and while one other process keeps a core busy (as a second worker, a test run or
a browser would). The figures justify the default of ``threads=1`` per worker: its one target
says that a second thread does not pay on a busy machine.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import torch

from autoinit._apply import build
from autoinit.models import mlp_factory
from autoinit.space import Config
from autoinit.train import Budget, prepare_data
from autoinit.train import run as train
from benchmarks.common import digits, target


def _spin(stop: multiprocessing.synchronize.Event) -> None:
    """Keep one core busy until told to stop."""
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _trial_seconds(threads: int, epochs: int, repeats: int) -> float:
    data = prepare_data(digits())
    model_fn = mlp_factory(64, 10)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = float("inf")
        for _ in range(repeats):
            model = build(model_fn, Config("kaiming_normal", "relu"), seed=0)
            started = time.perf_counter()
            train(model, data, Budget(epochs=epochs), seed=0)
            best = min(best, time.perf_counter() - started)
        return best
    finally:
        torch.set_num_threads(before)


def run(quick: bool, workdir: Path) -> dict[str, Any]:
    epochs, repeats = (1, 1) if quick else (5, 3)
    figures: dict[str, Any] = {}
    for busy in (False, True):
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        spinner = context.Process(target=_spin, args=(stop,), daemon=True) if busy else None
        if spinner:
            spinner.start()
            time.sleep(0.5)
        try:
            for threads in (1, 2):
                key = f"seconds_{threads}_threads_{'busy' if busy else 'idle'}"
                figures[key] = _trial_seconds(threads, epochs, repeats)
        finally:
            if spinner:
                stop.set()
                spinner.join()
    figures["slowdown_2_threads_idle"] = (
        figures["seconds_2_threads_idle"] / figures["seconds_1_threads_idle"]
    )
    figures["slowdown_2_threads_busy"] = (
        figures["seconds_2_threads_busy"] / figures["seconds_1_threads_busy"]
    )
    # The default of one thread is right when two threads are no faster on a busy machine.
    busy = target("2 threads / 1 thread, one core busy", figures["slowdown_2_threads_busy"],
                  ">=", 1.0)  # fmt: skip
    return {"figures": figures, "targets": [busy]}
