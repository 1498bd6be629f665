"""The benchmark scripts of issue 8 run and report what they claim to (on the CPU, tiny)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def small_synthetic() -> None:
    """`synthetic` in the test's data cache is a tenth of the default set: the scripts below
    check that every step runs and reports, which images of 300 a class show as well as 1,000
    (LT-100 keeps 3 of the tail class), in half the time."""
    from cifarctl.data.load import synthesize
    from cifarctl.data.synth import SynthSpec

    synthesize(SynthSpec(train_per_class=300, test_per_class=50))


def test_throughput_reports_every_way_with_its_ratios(data_home, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import throughput

    report = throughput.main(["--model", "vanillacnn", "--batch-size", "8", "--ks", "1,2",
                              "--warmup", "1", "--windows", "2", "--steps", "1",
                              "--workers", "0", "--dataset", "synthetic"])
    names = [r["name"] for r in report["results"]]
    assert names == ["a reference (PIL DataLoader, .item())", "b cifarctl engine",
                     "c fused K=1", "c fused K=2"]
    a, b, *fused = report["results"]
    assert all(r["images_per_s"] > 0 and len(r["window_images_per_s"]) == 2
               for r in report["results"])
    assert a["ratio_to_a"] == 1.0
    assert b["ratio_to_a"] == pytest.approx(b["images_per_s"] / a["images_per_s"], rel=0.01)
    assert fused[1]["ratio_to_b"] == pytest.approx(
        fused[1]["images_per_s"] / b["images_per_s"], rel=0.01)
    assert report["device"] == "cpu" and report["model"] == "vanillacnn"


def test_epoch_record_times_both_ways(monkeypatch):
    """Tiny: both ways time every epoch, and the writes in the background (now) keep the
    training thread in `epoch_ended` for less time than writing at once (reference)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import epoch_record

    result = epoch_record.main(["--runs", "2", "--epochs", "3", "--device-s", "0.2",
                                "--repeat", "1"])
    assert result["now_s_per_epoch"] >= 0.2 and result["reference_s_per_epoch"] >= 0.2
    assert result["reference_over_now"] == pytest.approx(
        result["reference_s_per_epoch"] / result["now_s_per_epoch"], rel=0.02)
    assert result["now_s_in_records"] < result["reference_s_in_records"]


@pytest.mark.slow
def test_sweep_start_times_the_same_sweep_forked_and_spawned(monkeypatch):
    """benchmarks/sweep_start.py, tiny: one sweep each way, both FINISHED (check=True)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import sweep_start

    result = sweep_start.main(["--trials", "1", "--workers", "1", "--repeat", "1"])
    assert result["now_start"] in ("forkserver", "spawn")
    assert len(result["runs_s"]["now"]) == len(result["runs_s"]["reference"]) == 1
    assert result["reference_over_now"] == pytest.approx(
        result["reference_s"] / result["now_s"], rel=0.02)


def test_throughput_interleaved_pairs_each_round(data_home, monkeypatch):
    """--interleave: one window of every way per round, and ratios paired by round."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import throughput

    report = throughput.main(["--model", "vanillacnn", "--batch-size", "8", "--only", "a,b",
                              "--warmup", "1", "--windows", "3", "--steps", "1",
                              "--workers", "0", "--interleave"])
    assert report["interleaved"] is True
    a, b = report["results"]
    assert len(a["window_images_per_s"]) == len(b["window_images_per_s"]) == 3
    by_round = sorted(x / y for x, y in zip(b["window_images_per_s"], a["window_images_per_s"]))
    assert b["paired_ratio_to_a"] == pytest.approx(by_round[1], rel=0.02)  # median of 3
    assert a["paired_ratio_to_a"] == 1.0


def test_interleaved_rounds_alternate_and_settle_before_each_window(monkeypatch):
    """The schedule itself: warm-up, then per round each way settles (2 x workers steps) and is
    timed, in order a, b then b, a."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import throughput

    calls = []

    def way(name):
        def run_steps(n):
            calls.append((name, n))
            time.sleep(1e-4)  # a window takes some time: rates stay finite

        return (name, lambda: run_steps, 1)

    args = throughput.argparse.Namespace(warmup=3, windows=3, steps=5, workers=2)
    results = throughput.measure_interleaved([way("a"), way("b")], args, torch.device("cpu"))
    assert calls == [("a", 3), ("b", 3),
                     ("a", 4), ("a", 5), ("b", 4), ("b", 5),
                     ("b", 4), ("b", 5), ("a", 4), ("a", 5),
                     ("a", 4), ("a", 5), ("b", 4), ("b", 5)]
    assert [len(r["window_images_per_s"]) for r in results] == [3, 3]


@pytest.mark.slow
def test_gpu_study_trains_reports_and_a_second_call_continues_the_same_store(tmp_path,
                                                                            data_home):
    """`gpu_study.sh STATE DATA BUDGET`, on the CPU with one seed of the study: every trial
    FINISHED, summary and report written; called again on STATE, the sweep finds them done."""
    small_synthetic()
    spec = tmp_path / "one-seed.yaml"
    spec.write_text((REPO / "experiments" / "lt100-study.yaml").read_text()
                    .replace("seed: [0, 1, 2]", "seed: [0]")
                    .replace("base: ", f"base: {REPO / 'experiments'}/"))
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "STUDY_SPEC": str(spec)}
    tiny = ["--set", "model.name=vanillacnn", "--set", "optim.epochs=1", "--set",
            "optim.warmup=0", "--set", "optim.batch_size=64"]
    state = tmp_path / "state"
    for _ in range(2):
        proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_study.sh"), str(state),
                               "synthetic", "120", *tiny], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        study = json.loads((state / "study.json").read_text())
        assert study["finished"] == 3 and len(study["runs"]) == 3
        assert {r["loss"] for r in study["runs"]} == {"ce", "focal", "ldam"}
        assert all(r["epochs_done"] == 1 and r["test_acc_at_best"] for r in study["runs"])
        report = json.loads((state / "report.json").read_text())
        assert report["source"]["experiments"] == ["lt100-study"]
    log = (state / "sweep.log").read_text()
    first, second = log.split("== sweep at")[1:]
    parent = first.split("3 ok (parent run ")[1].split(")")[0]
    assert f"3 skipped (parent run {parent})" in second  # the same sweep, found done


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_step_on_the_cpu(tmp_path, data_home):
    """`gpu_check.sh OUT --smoke`: the CUDA script's steps, in seconds, on the CPU."""
    small_synthetic()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(out),
                           "--smoke"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["smoke"] is True and summary["device"] == "cpu"
    steps = ["env_python", "tests_cuda", "throughput_eager", "profile", "loader", "study",
             "study_summary", "study_report", "study_eval", "throughput_cudagraphs",
             "throughput_compiled", "lt100"]
    assert [s["step"] for s in summary["steps"]] == steps
    assert all(s["rc"] == 0 for s in summary["steps"] if s["step"] != "tests_cuda")
    assert summary["steps"][1]["rc"] is None and "smoke" in summary["steps"][1]["skipped"]
    env_info = json.loads((out / "env.json").read_text())
    assert env_info["torch"] and env_info["cuda_available"] in (True, False)
    eager = json.loads((out / "throughput_eager.json").read_text())
    assert [r["name"][:1] for r in eager["results"]] == ["a", "b", "c", "c"]
    compiled = json.loads((out / "throughput_compiled.json").read_text())
    assert compiled["compile"] is True and len(compiled["results"]) == 2
    graphs = json.loads((out / "throughput_cudagraphs.json").read_text())
    assert graphs["compile_mode"] == "reduce-overhead" and len(graphs["results"]) == 2
    loader = json.loads((out / "loader.json").read_text())
    assert loader["images"] == 500 and loader["ratio"] > 0
    assert [p["policy"] for p in loader["policies"]] == ["crop-flip", "randaugment"]
    assert all(p["ratio"] > 0 for p in loader["policies"])
    lt = json.loads((out / "lt100.json").read_text())
    assert lt["status"] == "FINISHED" and lt["epochs_done"] == 1
    assert 0 <= lt["final_test_acc"] <= 1 and lt["projected_total_s"] > 0
    # the study: one seed of CE, CB-focal and LDAM-DRW through sweep, report and eval
    study = json.loads((out / "study.json").read_text())
    assert study["finished"] == 3 and study["projected_protocol_s"] > 0
    assert sorted(run["loss"] for run in study["runs"]) == ["ce", "focal", "ldam"]
    assert all(run["epochs_done"] == 1 for run in study["runs"])
    assert (out / "study" / "report" / "report.md").is_file()
    assert (out / "profile.txt").read_text().count("== ") == 2  # (b) and fused K = 2
    evaluated = json.loads((out / "study_eval.json").read_text())
    assert len(evaluated["corruptions"]["jpeg"]) == 5  # severities 1-5
    assert 0 <= evaluated["mean_corruption_acc"] <= 1
    for name in steps[:1] + steps[2:]:
        assert (out / f"{name}.log").is_file()
