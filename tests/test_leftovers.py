"""Temp files of writers killed mid-write (kill -9): listed, deletable, and cleaned up.

A killed `cifarctl data import` used to leave a hidden ~140 MB `*.npz.tmp-<pid>` in the data
folder that `data list` did not show, `data rm` could not delete and later imports kept.
Every file here is left by a real process that SIGKILLs itself inside the real write.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_fixtures import assert_one_line_error, run_cli

from cifarctl.checkpoint import load_checkpoint, save_checkpoint

# Runs in a child: the write it patches puts 1 MB in its file, then the process is killed.
KILLED_WHILE_WRITING = """
import os, signal, sys
from pathlib import Path

def write_then_die(file, *args, **kwargs):
    out = open(file, "wb") if isinstance(file, (str, os.PathLike)) else file
    out.write(b"x" * 1_000_000)
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "synth":
    import numpy
    numpy.savez = write_then_die
    from cifarctl.data import synthesize
    from cifarctl.data.synth import SynthSpec
    synthesize(SynthSpec(train_per_class=2, test_per_class=1))
else:
    import torch
    torch.save = lambda obj, file, **kwargs: write_then_die(file)
    from cifarctl.checkpoint import save_checkpoint
    save_checkpoint(Path(sys.argv[2]), {"epoch": 1})
"""


def killed_writer(folder: Path, *args: str) -> Path:
    """The temp file a writer killed inside its write left in `folder`."""
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_WRITING, *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = folder.glob("*.tmp-*")
    assert left.stat().st_size == 1_000_000
    return left


def age(path: Path) -> None:
    """Untouched for an hour: past `atomic.STALE_AFTER_S`, after which the next write deletes
    a temp file whose writer is not running here."""
    then = time.time() - 3600
    os.utime(path, (then, then))


@pytest.fixture
def live_pid():
    """A process that runs through the test: its temp files are writes in progress."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_data_list_shows_a_killed_imports_temp_file_and_rm_deletes_it(data_home, live_pid):
    left = killed_writer(data_home, "synth")
    listed = json.loads(run_cli("data", "list", "--json").stdout)["entries"]
    (entry,) = [e for e in listed if e["file"] == left.name]
    assert entry["leftover"] and entry["bytes"] == 1_000_000
    assert "interrupted write" in entry["problem"] and entry["name"] is None
    table = run_cli("data", "list")
    assert table.exit_code == 0 and "leftover: left by an interrupted write" in table.stdout

    busy = data_home / f"x.npz.tmp-{live_pid}"
    busy.write_bytes(b"an import in progress")
    assert busy.name not in run_cli("data", "list").stdout
    assert_one_line_error(run_cli("data", "rm", busy.name), 2,
                          f"is being written by process {live_pid}")
    removed = run_cli("data", "rm", left.name)
    assert removed.exit_code == 0 and f"removed {left}" in removed.stdout
    assert sorted(p.name for p in data_home.iterdir()) == [busy.name]


def test_the_next_write_into_the_cache_removes_dead_writers_temp_files(data_home, live_pid):
    left = killed_writer(data_home, "synth")
    busy = data_home / f"x.npz.tmp-{live_pid}"
    busy.write_bytes(b"an import in progress")
    age(busy)
    synth = ["data", "synth", "--train-per-class", "2", "--test-per-class", "1"]
    assert run_cli(*synth).exit_code == 0
    assert left.exists()  # just killed: maybe a live writer on another machine sharing it
    age(left)
    assert run_cli(*synth).exit_code == 0
    assert not left.exists() and busy.exists()
    assert sorted(p.name for p in data_home.iterdir()) == sorted(["synthetic.npz", busy.name])


def test_the_next_checkpoint_write_into_a_run_folder_removes_dead_writers_temp_files(
        tmp_path, live_pid):
    run = tmp_path / "checkpoints" / "run1"
    run.mkdir(parents=True)
    left = killed_writer(run, "checkpoint", str(run / "last.pt"))
    busy = run / f"best.pt.tmp-{live_pid}"
    busy.write_bytes(b"a save in progress")
    age(left)
    age(busy)
    save_checkpoint(run / "last.pt", {"epoch": 2})
    assert sorted(p.name for p in run.iterdir()) == sorted(["last.pt", busy.name])
    assert load_checkpoint(run / "last.pt") == {"epoch": 2}
