"""Forked children (``autoinit.workers.Forked``, ``wait_any``): what the confirmation's
processes rest on. Each test forks real children; none needs more than one core to pass."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from autoinit import workers
from autoinit.errors import ConfigError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork: Linux only")


def _pid_and(value):
    return lambda: (os.getpid(), value)


def test_each_task_runs_in_its_own_child_at_the_same_time():
    children = [workers.Forked(_pid_and(value)) for value in range(3)]  # all started first
    results = [child.result() for child in children]
    assert [value for _, value in results] == [0, 1, 2]
    pids = {pid for pid, _ in results}
    assert len(pids) == 3 and os.getpid() not in pids


def test_tensors_and_torch_threads_cross_the_pipe():
    def task():
        return torch.get_num_threads(), torch.arange(4.0) * 2

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threads, there = workers.Forked(task, threads=1).result()
    finally:
        torch.set_num_threads(before)
    assert threads == 1 and torch.equal(there, torch.tensor([0.0, 2.0, 4.0, 6.0]))


def test_a_child_that_is_killed_costs_time_not_its_result():
    calls = []

    def task():
        calls.append(os.getpid())
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # the child dies before it sends anything
        return "done"

    parent = os.getpid()
    child = workers.Forked(task)
    assert child.result() == "done"
    assert calls == [parent]  # the parent's list: the task ran here after the child died


def test_a_fork_that_fails_runs_the_task_here(monkeypatch):
    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")  # ulimit -u reached

    monkeypatch.setattr(os, "fork", no_fork)
    child = workers.Forked(_pid_and(1))
    assert child.finished()  # nothing to wait for
    workers.wait_any([child])  # returns at once
    assert child.result() == (os.getpid(), 1)


def test_an_error_in_a_child_is_raised_here_with_its_own_traceback():
    def task():
        raise ValueError("a bug in the task")

    child = workers.Forked(task)
    with pytest.raises(ValueError, match="a bug in the task") as raised:
        child.result()
    assert raised.traceback[-1].name == "task"


def test_a_result_that_cannot_be_pickled_is_computed_here_instead():
    def task():
        return lambda: os.getpid()  # a lambda does not pickle

    result = workers.Forked(task).result()
    assert result() == os.getpid()


def test_finished_tells_a_running_child_from_one_that_is_done():
    child = workers.Forked(lambda: time.sleep(30))
    assert not child.finished()
    child.kill()  # killing it never waits for the 30 s
    quick = workers.Forked(lambda: 7)
    deadline = time.monotonic() + 30
    while not quick.finished() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quick.finished() and quick.result() == 7


def test_wait_any_returns_when_the_first_child_is_done():
    slow = workers.Forked(lambda: time.sleep(60))
    quick = workers.Forked(lambda: 7)
    try:
        workers.wait_any([slow, quick])  # not the 60 s
        assert quick.finished() and not slow.finished() and quick.result() == 7
    finally:
        slow.kill()
    workers.wait_any([])  # nothing to wait for


def test_text_printed_before_a_fork_is_printed_once(tmp_path):
    """Python's buffered stdout: a child that flushed on exit would print it again."""
    script = textwrap.dedent("""
        import sys
        from autoinit import workers
        sys.stdout.write("before the fork\\n")  # buffered: stdout is a pipe here
        assert workers.Forked(lambda: 2).result() == 2
        sys.stdout.write("after\\n")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert out == "before the fork\nafter\n"


def test_a_child_prints_nothing(capfd):
    def noisy():
        print("from the child")
        warnings.warn("a warning in the child", UserWarning, stacklevel=1)
        return 1

    assert workers.Forked(noisy).result() == 1
    out, err = capfd.readouterr()
    assert "from the child" not in out and "a warning in the child" not in err


def test_auto_is_one_process_per_usable_core_on_the_cpu_and_one_on_a_gpu(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = torch.device("cpu")
    assert workers.resolve_jobs("auto", cpu) == 6
    assert workers.resolve_jobs("auto", cpu, threads=2) == 3  # each process runs 2 threads
    assert workers.resolve_jobs(4, cpu) == 4
    assert workers.resolve_jobs("auto", torch.device("cuda")) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA build with a GPU
    assert workers.resolve_jobs("auto", cpu) == 1 and workers.resolve_jobs(4, cpu) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(workers.sys, "platform", "darwin")  # no safe fork: one process
    assert workers.resolve_jobs("auto", cpu) == 1 and workers.resolve_jobs(4, cpu) == 1


@pytest.mark.parametrize("bad", [0, -1, "all", 2.5, True])
def test_a_bad_number_of_jobs_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="confirm_jobs must be a positive integer or 'auto'"):
        workers.resolve_jobs(bad, torch.device("cpu"))
