"""How a local sweep starts its workers (`cifarctl.sweep.processes`): a fork server that has
imported torch and MLflow once, each worker a fork of it with the sweep's environment."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cifarctl.errors import UsageError
from cifarctl.sweep.processes import PRELOAD, adopt_env, start_method, worker_context, worker_env


def test_the_fork_server_is_the_default_on_linux_and_spawn_can_be_asked_for(monkeypatch):
    monkeypatch.delenv("CIFARCTL_WORKER_START", raising=False)
    assert start_method() == ("forkserver" if sys.platform.startswith("linux") else "spawn")
    assert start_method("darwin") == start_method("win32") == "spawn"
    monkeypatch.setenv("CIFARCTL_WORKER_START", "forkserver")
    assert start_method("darwin") == "forkserver"
    monkeypatch.setenv("CIFARCTL_WORKER_START", "fork")  # a typo is one line, not ignored
    with pytest.raises(UsageError, match="CIFARCTL_WORKER_START=fork: expected one of"):
        start_method()
    monkeypatch.setenv("CIFARCTL_WORKER_START", "spawn")
    assert start_method() == "spawn"
    assert worker_context().get_start_method() == "spawn"


def _report_env(queue, env: dict[str, str]) -> None:
    """A worker's first step, then what it sees (a test's module: the child imports it)."""
    adopt_env(env)
    queue.put((os.environ.get("CIFARCTL_TEST_MARK"), os.environ.get("CIFARCTL_TEST_GONE"),
               "torch" in sys.modules))


def test_a_worker_sees_the_sweeps_environment_of_now_not_the_servers(monkeypatch):
    """The fork server keeps the environment it started with (in a test session it lives on
    between tests); a worker takes the sweep's environment of the moment it starts."""
    monkeypatch.delenv("CIFARCTL_WORKER_START", raising=False)
    monkeypatch.setenv("CIFARCTL_TEST_GONE", "old")
    ctx = worker_context()
    monkeypatch.setenv("CIFARCTL_TEST_MARK", "now")
    monkeypatch.delenv("CIFARCTL_TEST_GONE")
    queue = ctx.Queue()
    process = ctx.Process(target=_report_env, args=(queue, worker_env()))
    process.start()
    mark, gone, has_torch = queue.get(timeout=120)
    process.join(timeout=60)
    assert process.exitcode == 0
    assert (mark, gone) == ("now", None)
    if ctx.get_start_method() == "forkserver":
        assert has_torch  # imported by the server, before the fork


def test_the_preloaded_modules_never_touch_cuda():
    """A CUDA driver initialised in the fork server would break CUDA in every forked worker
    ("initialization error") and pin them all to the server's GPUs: importing `PRELOAD` must
    not query a device. Checked in a fresh interpreter with torch's CUDA entry points trapped."""
    code = f"""
import torch, torch.cuda
calls = []
def trap(name):
    def called(*a, **k):
        calls.append(name)
        raise RuntimeError(name)
    return called
for name in ("is_available", "device_count", "init", "_lazy_init", "current_device"):
    setattr(torch.cuda, name, trap("torch.cuda." + name))
for name in ("_cuda_getDeviceCount", "_cuda_init"):
    setattr(torch._C, name, trap("torch._C." + name))
for module in {PRELOAD!r}:
    __import__(module)
print("calls:", calls)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("calls: []"), out.stdout


def test_a_worker_that_cannot_start_is_an_exit_event_not_a_crash(monkeypatch):
    """`process.start()` raising (the fork server killed while it imports, no processes
    left) ends that group's trials like a worker that died: the sweep goes on and ends their
    runs, instead of an exception leaving every run RUNNING."""
    from types import SimpleNamespace

    from cifarctl.sweep.runner import LocalExecutor

    class NoStart:
        def __init__(self, **kwargs):
            pass

        def start(self):
            raise EOFError("unexpected EOF")

    monkeypatch.setenv("CIFARCTL_WORKER_START", "spawn")
    executor = LocalExecutor(2, [])
    monkeypatch.setattr(executor, "ctx", SimpleNamespace(Process=NoStart))
    tasks = [SimpleNamespace(key=k) for k in ("a", "b")]
    executor.submit(tasks)
    assert executor.free() == 2 and executor.busy() == 0
    events = executor.poll(timeout=30)
    assert [(kind, key) for kind, key, _ in events] == [("exit", "a"), ("exit", "b")]
    assert "did not start (EOFError: unexpected EOF)" in events[0][2]["error"]
    assert executor.poll(timeout=0.01) == []
    executor.close()
