"""Forked children (``autoinit.workers.Forked``, ``in_processes``): what the confirmation's
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


def test_each_task_runs_in_its_own_process_and_results_come_back_in_order():
    results = workers.in_processes([_pid_and(0), _pid_and(1), _pid_and(2)])
    assert [value for _, value in results] == [0, 1, 2]
    pids = [pid for pid, _ in results]
    assert pids[0] == os.getpid() and len(set(pids)) == 3  # the first here, the others forked


def test_tensors_and_torch_threads_cross_the_pipe():
    def task():
        return torch.get_num_threads(), torch.arange(4.0) * 2

    (_, here), (threads, there) = workers.in_processes([lambda: (0, torch.zeros(1)), task],
                                                       threads=1)  # fmt: skip
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
    assert workers.in_processes([_pid_and(0), _pid_and(1)]) == [(os.getpid(), 0),
                                                                (os.getpid(), 1)]  # fmt: skip


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


def test_an_error_here_kills_the_children(tmp_path):
    pid_file = tmp_path / "child.pid"

    def sleeper():
        pid_file.write_text(str(os.getpid()))
        time.sleep(60)

    def here():  # Ctrl+C while the child trains
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        workers.in_processes([here, sleeper])
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running for 60 s
        os.kill(int(pid_file.read_text()), 0)


def test_text_printed_before_a_fork_is_printed_once(tmp_path):
    """Python's buffered stdout: a child that flushed on exit would print it again."""
    script = textwrap.dedent("""
        import sys
        from autoinit import workers
        sys.stdout.write("before the fork\\n")  # buffered: stdout is a pipe here
        workers.in_processes([lambda: 1, lambda: 2])
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

    assert workers.in_processes([lambda: 0, noisy]) == [0, 1]
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
