"""An epoch's checkpoints and metrics are written while the next epoch trains
(`RunRecord.epoch_ended` through `training.background.Background`): the writes overlap the
training, their error still fails the run, and nothing they write can land after what
follows them (an interruption's checkpoint, the run's end). Fast: tiny runs on the CPU."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from run_helpers import InterruptAt, write_synthetic
from test_follow import tiny_config

import cifarctl.training.record as record_module
from cifarctl.checkpoint import load_run_state
from cifarctl.progress import NullReporter
from cifarctl.tracking import NullTracker
from cifarctl.training import train
from cifarctl.training.background import Background
from cifarctl.training.record import Weights


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory, "writes-synth", train_per_class=30,
                           test_per_class=10)


class SlowStore(NullTracker):
    """Logs an epoch's metrics in `log_s` seconds, noting when and in which thread."""

    run_id = "a" * 32

    def __init__(self, log_s: float = 0.0, fail_at: int | None = None) -> None:
        self.log_s, self.fail_at = log_s, fail_at
        self.logged: list[tuple[int, float, str]] = []  # (step, done at, thread)
        self.status: str | None = None

    def log_metrics(self, metrics, step=None):
        if step == self.fail_at:
            raise OSError("the store's disk is full")
        time.sleep(self.log_s)
        self.logged.append((step, time.monotonic(), threading.current_thread().name))

    def finish(self, status="FINISHED"):
        self.status = status


class EpochStarts(NullReporter):
    def __init__(self) -> None:
        self.started: dict[int, float] = {}

    def epoch_started(self, epoch, epochs, steps):
        self.started[epoch] = time.monotonic()


def test_an_epochs_writes_overlap_the_next_epochs_training(data_home, tiny_dataset, tmp_path):
    store, starts = SlowStore(log_s=0.5), EpochStarts()
    outcome = train(tiny_config(tiny_dataset), tracker=store, reporter=starts,
                    checkpoint_root=tmp_path)
    assert outcome.status == "FINISHED" and store.status == "FINISHED"
    assert [step for step, _, _ in store.logged][:3] == [0, 1, 2]  # in order, all of them
    assert all(thread.startswith("epoch-writes") for _, _, thread in store.logged[:3])
    done = {step: at for step, at, _ in store.logged}
    # epoch 1 started while epoch 0's metrics were still being written (a 0.5 s write)
    assert starts.started[1] < done[0] and starts.started[2] < done[1]
    assert load_run_state(outcome.checkpoint_dir / "last.pt").epoch == 3  # waited for at the end


def test_a_write_that_fails_fails_the_run_with_its_error(data_home, tiny_dataset, tmp_path):
    store = SlowStore(fail_at=0)
    with pytest.raises(OSError, match="disk is full"):
        train(tiny_config(tiny_dataset), tracker=store, checkpoint_root=tmp_path)
    assert store.status == "FAILED"  # ended, not left RUNNING
    # epoch 0's checkpoint was written before its metrics
    assert load_run_state(tmp_path / store.run_id / "last.pt").epoch == 1


def test_an_interruption_checkpoint_lands_after_the_epoch_before(
        data_home, tiny_dataset, tmp_path, monkeypatch):
    """Ctrl-C in epoch 2 while epoch 1's checkpoint is still being written: the file left
    is the interruption's, at its exact step, never the older epoch boundary's."""
    saved = record_module.save_run_state

    def slow_at_epoch_ends(path, state, **kwargs):
        if state.sums is None:
            time.sleep(0.5)
        saved(path, state, **kwargs)

    monkeypatch.setattr(record_module, "save_run_state", slow_at_epoch_ends)
    outcome = train(tiny_config(tiny_dataset), tracker=NullTracker(),
                    reporter=InterruptAt(1, 3), checkpoint_root=tmp_path)
    assert outcome.status == "KILLED" and outcome.epochs_done == 1
    state = load_run_state(outcome.checkpoint_dir / "last.pt")
    assert (state.epoch, state.steps_done) == (1, 3)


def test_weights_are_copied_before_the_next_step_changes_them():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    live = Weights(model.state_dict(), optimizer.state_dict(), {"torch": torch.get_rng_state()})
    copy = live.on_host()
    before = copy.model["weight"].clone(), copy.optimizer["state"][0]["momentum_buffer"].clone()
    optimizer.step()  # changes the weights and the momentum in place
    assert not torch.equal(model.weight.detach(), before[0])
    torch.testing.assert_close(copy.model["weight"], before[0], rtol=0, atol=0)
    torch.testing.assert_close(copy.optimizer["state"][0]["momentum_buffer"], before[1],
                               rtol=0, atol=0)
    assert copy.optimizer["param_groups"] == live.optimizer["param_groups"]


def test_jobs_run_in_order_in_one_thread_and_a_failure_is_raised_once():
    jobs, ran = Background("test-jobs"), []
    jobs.start(lambda: (time.sleep(0.1), ran.append(("a", threading.current_thread().name))))
    jobs.start(lambda: 1 / 0)
    jobs.start(lambda: ran.append(("b", threading.current_thread().name)))
    assert ran == []  # queued: start returns at once
    with pytest.raises(ZeroDivisionError):
        jobs.wait()
    assert [job for job, _ in ran] == ["a", "b"]  # the jobs after the failed one ran too
    assert len({thread for _, thread in ran}) == 1 and ran[0][1].startswith("test-jobs")
    assert not [t for t in threading.enumerate() if t.name.startswith("test-jobs")]
    jobs.wait()  # raised once: the next wait has nothing to raise


def test_a_wait_that_keeps_the_error_leaves_it_to_the_next_wait():
    """A fused member that aborts (its loss turned NaN) waits for the group's queue without
    swallowing another member's failed write: the group's next wait raises it."""
    jobs = Background("test-jobs")
    jobs.start(lambda: 1 / 0)
    jobs.wait(keep_error=True)
    with pytest.raises(ZeroDivisionError):
        jobs.wait()

