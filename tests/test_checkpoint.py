"""Checkpoints as typed state: the file format, old files, files that are no checkpoint.

The keys of a checkpoint file are a contract (ARCHITECTURE.md, "Training"): `eval`, `sweep`
and users' scripts read them, and files written by earlier versions must still resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import assert_one_line_error, run_cli
from run_helpers import InterruptAt, write_synthetic

from cifarctl.checkpoint import (
    Best,
    RunState,
    load_checkpoint,
    load_run_state,
    save_run_state,
    saved_position,
)
from cifarctl.config import load_config
from cifarctl.errors import CifarctlError, UsageError

# every key a checkpoint held before RunState existed (cifarctl 0.1, issue 4 and stop 13)
KEYS = {"model", "optimizer", "config", "epoch", "best", "history", "sums", "rng",
        "cifarctl_version", "dataset_fingerprint"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "ckpt-tiny", train_per_class=20, test_per_class=4)


def tiny_config(dataset: Path, **overrides):
    return load_config(None, {"model.name": "vanillacnn", "data.dataset": str(dataset),
                              "optim.epochs": 2, "optim.batch_size": 32, "optim.warmup": 1,
                              "optim.steps": [1], "data.val_per_class": 2,
                              "run.device": "cpu", **overrides})


def test_run_state_round_trips_through_a_file_with_the_documented_keys(tmp_path):
    state = RunState(model={"w": torch.arange(4.0)}, optimizer={"state": {}, "param_groups": []},
                     config={"optim": {"epochs": 3}}, epoch=2,
                     best=Best(0.5, 1, {"test_acc": 0.5}), history=[{"a": 1.0}, {"a": 2.0}],
                     sums={"loss_sum": torch.tensor(1.0), "steps_done": 4},
                     rng={"torch": torch.get_rng_state()}, dataset_fingerprint="abc",
                     cifarctl_version="0.1.0")
    save_run_state(tmp_path / "last.pt", state)
    raw = load_checkpoint(tmp_path / "last.pt")
    assert set(raw) == KEYS
    assert raw["best"] == {"value": 0.5, "epoch": 1, "metrics": {"test_acc": 0.5}}
    back = load_run_state(tmp_path / "last.pt")
    assert back.epoch == 2 and back.steps_done == 4 and back.best == state.best
    assert back.history == state.history and back.dataset_fingerprint == "abc"
    assert torch.equal(back.model["w"], state.model["w"])
    assert not back.finished_training  # a partial epoch is left


def test_an_epoch_both_best_and_last_is_one_state_in_two_files_and_a_position(tmp_path):
    """`also=`: the second file is a byte copy of the first (one serialisation), and
    `saved_position` reads the (epoch, step) a sweep packs resumed trials by."""
    state = RunState(model={"w": torch.arange(3.0)}, optimizer={}, config={"optim": {}},
                     epoch=5, best=Best(None, 4, {}), history=[], sums=None, rng={})
    save_run_state(tmp_path / "run" / "best.pt", state, also=tmp_path / "run" / "last.pt")
    best, last = (tmp_path / "run" / name for name in ("best.pt", "last.pt"))
    assert best.read_bytes() == last.read_bytes()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]
    assert saved_position(last) == (5, 0)
    state.sums = {"steps_done": 7}
    save_run_state(last, state)
    assert saved_position(last) == (5, 7)
    last.write_bytes(b"torn")
    assert saved_position(last) is None and saved_position(tmp_path / "none.pt") is None


@pytest.mark.parametrize("content", [{"model": {}}, {"a": 1}, [1, 2], torch.zeros(2)])
def test_a_file_that_is_no_run_checkpoint_is_one_clear_line(tmp_path, content):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(UsageError, match=r"x\.pt is not a cifarctl checkpoint \(no .*config"):
        load_run_state(tmp_path / "x.pt")


def test_a_checkpoint_written_before_run_state_still_resumes_exactly(data_home, tiny, tmp_path):
    """The oldest layout (no dataset fingerprint, no version), written by `torch.save` of a
    plain dict, resumes and ends where an uninterrupted run ends."""
    from cifarctl.training import launch

    cfg = tiny_config(tiny)
    straight = launch(cfg, track=False, checkpoint_root=tmp_path / "a", quiet=True)
    stopped = launch(cfg, track=False, checkpoint_root=tmp_path / "b",
                     reporter=InterruptAt(1, 1))
    assert stopped.status == "KILLED"
    path = tmp_path / "b" / stopped.run_id / "last.pt"
    old = load_checkpoint(path)
    del old["dataset_fingerprint"], old["cifarctl_version"]
    torch.save(old, path)
    resumed = launch(None, resume_run_id=stopped.run_id, track=False,
                     checkpoint_root=tmp_path / "b", quiet=True)
    assert resumed.status == "FINISHED" and resumed.epochs_done == 2
    assert resumed.history[-1]["test_loss"] == straight.history[-1]["test_loss"]
    wa = load_run_state(straight.checkpoint_dir / "last.pt").model
    wb = load_run_state(resumed.checkpoint_dir / "last.pt").model
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def small_state(weights: torch.Tensor) -> RunState:
    return RunState(model={"w": weights}, optimizer={}, config={"optim": {}}, epoch=1,
                    best=Best(), history=[], sums=None, rng={})


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small_disk):
    """torch.save reports a full disk as a RuntimeError from its writer ("[enforce fail at
    inline_container.cc] unexpected pos ..."), not an OSError."""
    disk = small_disk("300k")
    last = disk / "run" / "last.pt"
    save_run_state(last, small_state(torch.arange(100.0)))
    with pytest.raises(CifarctlError, match=r"^cannot write checkpoint .*last\.pt: No space "
                                            r"left on device \(\d+ KiB free in "):
        save_run_state(last, small_state(torch.zeros(200_000)))  # 800 KB
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]  # no temp file
    assert torch.equal(load_run_state(last).model["w"], torch.arange(100.0))


def test_train_on_a_full_checkpoint_disk_says_so_in_one_line(data_home, tiny, small_disk):
    disk = small_disk("300k")  # vanillacnn's weights and momentum: ~470 KB
    result = run_cli("train", "vanillacnn", "--dataset", str(tiny), "--epochs", "1",
                     "--batch-size", "32", "--set", "optim.warmup=1", "--set",
                     "optim.steps=[1]", "--no-track", "--checkpoints", str(disk), "-q")
    assert_one_line_error(result, 1, "cannot write checkpoint", "No space left on device")
    assert not [p for p in disk.rglob("*") if p.is_file()]
