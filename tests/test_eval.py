"""`cifarctl eval` on a tiny checkpoint really trained here (issue 6).

`vanillacnn` trained for one epoch on a synthetic set (60 training images a class, 10 of
them held out for validation, long-tailed with ratio 5; 10 test images a class), tracked in
a real MLflow store. Per-class accuracy and ECE are checked against a plain loop written
here, corruptions against the clean images, and the run against its own state before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from run_helpers import BF16
from typer.testing import CliRunner

from cifarctl.cli import app
from cifarctl.evaluation import CORRUPTION_NAMES
from cifarctl.evaluation.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    corrupt,
    corruption_generator,
)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # SPEC 2, written out again as the test's reference
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _mlflow_template_db) -> dict:
    """A finished, tracked run with best/last checkpoints; its store, data and folders."""
    from cifarctl.config import load_config
    from cifarctl.data.synth import SynthSpec, write_batches
    from cifarctl.training import launch

    folder = tmp_path_factory.mktemp("eval")
    shutil.copyfile(_mlflow_template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    dataset = folder / "synth"
    write_batches(dataset, SynthSpec(train_per_class=60, test_per_class=10, seed=0))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFARCTL_DATA", str(folder / "cache"))
        mp.chdir(folder)
        cfg = load_config(None, {
            "model.name": "vanillacnn", "data.dataset": str(dataset), "optim.epochs": 1,
            "optim.batch_size": 32, "optim.warmup": 0, "optim.steps": [5],
            "data.val_per_class": 10, "data.imbalance": 5, "run.device": "cpu",
            "run.experiment": "eval"})
        outcome = launch(cfg, tracking_uri=uri, checkpoint_root=folder / "checkpoints",
                         quiet=True)
    assert outcome.status == "FINISHED"
    return {"uri": uri, "run_id": outcome.run_id, "folder": folder, "dataset": dataset,
            "checkpoints": folder / "checkpoints"}


@pytest.fixture(autouse=True)
def _env(trained, monkeypatch):
    monkeypatch.setenv("CIFARCTL_DATA", str(trained["folder"] / "cache"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["uri"])
    monkeypatch.chdir(trained["folder"])


def run_eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


def test_per_class_accuracy_and_ece_match_a_plain_loop(trained):
    from cifarctl.checkpoint import load_checkpoint
    from cifarctl.data import load_dataset
    from cifarctl.evaluation.run import evaluate_target, resolve_target
    from cifarctl.models import create_model

    target = resolve_target(trained["run_id"], checkpoint_root=trained["checkpoints"])
    result = evaluate_target(target, device="cpu")  # float32, as the loop below
    state = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "best.pt")
    model = create_model("vanillacnn")
    model.load_state_dict(state["model"])
    model.eval()
    data = load_dataset(str(trained["dataset"]))
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    right, seen = [0] * 10, [0] * 10
    ece_bins = [[0, 0.0, 0] for _ in range(15)]
    with torch.no_grad():
        for image, label in zip(data.test_images, data.test_labels):  # one image at a time
            x = (torch.as_tensor(image).permute(2, 0, 1).float() / 255 - mean) / std
            probs = model(x[None]).softmax(dim=1)[0]
            confidence, pred = probs.max(dim=0)
            seen[label] += 1
            right[label] += int(pred == label)
            b = min(int(confidence * 15), 14)
            ece_bins[b][0] += 1
            ece_bins[b][1] += float(confidence)
            ece_bins[b][2] += int(pred == label)
    direct = [r / n for r, n in zip(right, seen)]
    assert result.per_class == pytest.approx(direct, abs=1e-6)  # float32 on the device
    assert result.accuracy == pytest.approx(sum(right) / sum(seen), abs=1e-6)
    assert [row[i] for i, row in enumerate(result.confusion)] == right
    assert result.images == 100 and result.split == "test" and result.which == "best"
    ece = sum(abs(c - conf) for _, conf, c in ece_bins) / sum(seen)
    assert result.ece == pytest.approx(ece, abs=1e-5)
    if BF16:  # on the GPU, under bf16 autocast: the same up to a near-tie or two
        fast = evaluate_target(target)
        assert fast.accuracy == pytest.approx(result.accuracy, abs=0.02)
        assert fast.ece == pytest.approx(result.ece, abs=1e-2)
    # shot groups by the run's own counts: 50 images a class, exp profile ratio 5 (SPEC 1.3)
    counts = [int(50 * (1 / 5) ** (i / 9)) for i in range(10)]
    assert result.train_counts == counts  # [50, 41, 34, 29, 24, 20, 17, 14, 11, 10]
    assert result.shot_classes == {"many": [], "medium": [0, 1, 2, 3, 4, 5],
                                   "few": [6, 7, 8, 9]}
    assert result.shots["many"] is None
    assert result.shots["medium"] == pytest.approx(sum(direct[:6]) / 6, abs=1e-6)
    assert result.shots["few"] == pytest.approx(sum(direct[6:]) / 4, abs=1e-6)


def test_severity_zero_is_the_clean_accuracy(trained):
    from cifarctl.checkpoint import load_checkpoint
    from cifarctl.data import load_dataset
    from cifarctl.data.loader import DeviceLoader
    from cifarctl.engine import evaluate
    from cifarctl.evaluation.run import accuracy_under
    from cifarctl.models import create_model

    state = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "best.pt")
    model = create_model("vanillacnn")
    model.load_state_dict(state["model"])
    data = load_dataset(str(trained["dataset"]))
    loader = DeviceLoader(data.test_images, data.test_labels, batch_size=64, shuffle=False)
    clean = evaluate(model, loader.epoch(0), num_classes=10)  # the loader's own batches
    clean_acc = clean.confusion.diagonal().sum() / clean.count
    for name in CORRUPTION_NAMES:
        assert torch.equal(accuracy_under(model, loader, name, 0, num_classes=10), clean_acc)
        worst = float(accuracy_under(model, loader, name, SEVERITIES, num_classes=10))
        assert 0.0 <= worst <= 1.0


def _test_images(trained) -> torch.Tensor:
    from cifarctl.data import load_dataset

    images = load_dataset(str(trained["dataset"])).test_images
    return torch.as_tensor(images).permute(0, 3, 1, 2).contiguous()      # (100, 3, 32, 32)


@pytest.mark.parametrize("name", CORRUPTION_NAMES)
def test_each_corruption_grows_with_severity(trained, name):
    x = _test_images(trained)
    assert corrupt(x, name, 0) is x
    distances = []
    for severity in range(SEVERITIES + 1):
        y = corrupt(x, name, severity, corruption_generator(0, name, severity))
        assert y.dtype == torch.uint8 and y.shape == x.shape
        distances.append(float((y.float() - x.float()).abs().mean()))
    assert distances[0] == 0.0
    assert all(a < b for a, b in zip(distances, distances[1:])), distances
    # seeded: the same generator state gives the same images
    again = corrupt(x, name, 3, corruption_generator(0, name, 3))
    assert torch.equal(again, corrupt(x, name, 3, corruption_generator(0, name, 3)))


def test_random_corruptions_follow_the_seed_and_keep_what_they_promise(trained):
    x = _test_images(trained)[:32]
    for name in ("gaussian_noise", "phase_noise"):
        a = corrupt(x, name, 2, corruption_generator(0, name, 2))
        b = corrupt(x, name, 2, corruption_generator(1, name, 2))
        assert not torch.equal(a, b)
    # contrast keeps each image's channel means (up to uint8 rounding), phase noise its
    # amplitude spectrum (up to rounding and clipping)
    low = corrupt(x, "contrast", 5).float()
    assert (low.mean(dim=(2, 3)) - x.float().mean(dim=(2, 3))).abs().max() < 1.0
    noisy = corrupt(x, "phase_noise", 1, corruption_generator(0, "phase_noise", 1)).float()
    amp_x = torch.fft.rfft2(x.float()).abs()
    amp_y = torch.fft.rfft2(noisy).abs()
    assert float((amp_y - amp_x).abs().mean() / amp_x.mean()) < 0.15
    assert list(CORRUPTIONS) == list(CORRUPTION_NAMES)


def test_jpeg_by_torchvision_and_by_pillow_agree(trained):
    from cifarctl.evaluation.corruptions import jpeg, jpeg_pil

    x = _test_images(trained)[:16]
    for quality in CORRUPTIONS["jpeg"].levels:
        a, b = jpeg(x, quality), jpeg_pil(x, quality)
        assert a.shape == b.shape == x.shape
        assert float((a.float() - b.float()).abs().mean()) < 1.0  # both libjpeg; decoders differ


def test_corrupted_batches_of_a_subset_loader_score_its_rows():
    """A `subset()` view shares its parent's images: its corrupted batches are those of its
    own rows, in their order, exactly as a loader built on those rows alone gives them."""
    from cifarctl.data.loader import DeviceLoader
    from cifarctl.evaluation.run import corrupted_batches

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.arange(30) % 10
    every = DeviceLoader(images, labels, batch_size=8, shuffle=False)
    rows = torch.tensor([17, 3, 9, 0, 25, 11, 4, 28])
    view = every.subset(rows, batch_size=4, shuffle=True, augment=True, drop_last=True, seed=1)
    nested = every.subset(torch.arange(29, -1, -1), batch_size=8, shuffle=False,
                          augment=False, drop_last=False, seed=0).subset(
        29 - rows, batch_size=8, shuffle=False, augment=False, drop_last=False, seed=0)
    alone = DeviceLoader(images[rows], labels[rows], batch_size=8, shuffle=False)

    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    clean = (images[rows].permute(0, 3, 1, 2).float() / 255 - mean) / std   # (8, 3, 32, 32)
    for loader in (view, nested):
        batches = list(corrupted_batches(loader, "gaussian_noise", 0, batch_size=3))
        assert [len(y) for _, y in batches] == [3, 3, 2]
        torch.testing.assert_close(torch.cat([x for x, _ in batches]), clean)
        assert torch.equal(torch.cat([y for _, y in batches]), labels[rows])
        for name in ("gaussian_noise", "jpeg"):  # a random one and a deterministic one
            ours = list(corrupted_batches(loader, name, 3, batch_size=3))
            reference = list(corrupted_batches(alone, name, 3, batch_size=3))
            for (x, y), (x_ref, y_ref) in zip(ours, reference, strict=True):
                assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()


def test_cli_logs_eval_metrics_and_keeps_the_training_run(trained, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained["uri"])
    run_id = trained["run_id"]
    before = client.get_run(run_id)
    history_before = [(m.step, m.value) for m in client.get_metric_history(run_id, "test_acc")]
    result = run_eval(run_id, "--corruptions", "--checkpoints", str(trained["checkpoints"]),
                      "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    after = client.get_run(run_id)
    # the run: same status, end time and training metrics; eval_* added
    assert after.info.status == before.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time
    training = {k: v for k, v in after.data.metrics.items() if not k.startswith("eval_")}
    assert training == before.data.metrics
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "test_acc")] == \
        history_before
    metrics = after.data.metrics
    assert metrics["eval_test_acc"] == pytest.approx(doc["accuracy"])
    for i in range(10):
        assert metrics[f"eval_test_acc_class_{i}"] == pytest.approx(doc["per_class"][i])
    assert metrics["eval_ece"] == pytest.approx(doc["ece"])
    assert "eval_many_acc" not in metrics  # no class has > 100 images: not made up
    assert metrics["eval_few_acc"] == pytest.approx(doc["shots"]["few"])
    values = [metrics[f"eval_corruption_{n}_s{s}"] for n in CORRUPTION_NAMES
              for s in range(1, 6)]
    assert doc["corruptions"]["jpeg"][0] == pytest.approx(metrics["eval_corruption_jpeg_s1"])
    assert metrics["eval_mean_corruption_acc"] == pytest.approx(sum(values) / 35)
    # the best checkpoint's test accuracy is what training logged for it
    assert doc["accuracy"] == pytest.approx(before.data.metrics["test_acc_at_best"], abs=1e-6)
    files = {a.path for a in client.list_artifacts(run_id, "eval")}
    assert files == {"eval/confusion_matrix.png", "eval/confusion_matrix.json",
                     "eval/corruptions.png", "eval/results.json"}
    for png in ("confusion_matrix.png", "corruptions.png"):
        _valid_png(Path(client.download_artifacts(run_id, f"eval/{png}", str(tmp_path))))
    # the corruptions' seed is kept with their numbers (another --seed draws other noise)
    logged = json.loads(Path(client.download_artifacts(run_id, "eval/results.json",
                                                       str(tmp_path))).read_text())
    assert doc["seed"] == logged["seed"] == 0


def test_tables_in_the_terminal(trained):
    result = run_eval(trained["run_id"], "--corruption", "blur", "--no-log",
                      "--checkpoints", str(trained["checkpoints"]))
    assert result.exit_code == 0, result.output
    for text in ("accuracy", "ECE (15 bins)", "few-shot", "per class", "confusion matrix",
                 "accuracy % under corruption", "blur", "mean corruption accuracy"):
        assert text in result.output, text


def test_checkpoint_path_last_and_val_split(trained):
    from mlflow.tracking import MlflowClient

    path = trained["checkpoints"] / trained["run_id"] / "last.pt"
    result = run_eval(str(path), "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["which"] == "last" and doc["split"] == "val" and doc["images"] == 100
    assert doc["epoch"] == 1  # the checkpoint's trained epochs, kept with its numbers
    assert doc["run_id"] == trained["run_id"] and doc["logged"] is True
    assert set(doc["metrics"]) >= {"eval_last_val_acc", "eval_last_val_acc_class_9",
                                   "eval_last_val_ece", "eval_last_val_few_acc"}
    client = MlflowClient(trained["uri"])
    assert client.get_run(trained["run_id"]).data.metrics["eval_last_val_acc"] == \
        pytest.approx(doc["accuracy"])
    assert {a.path for a in client.list_artifacts(trained["run_id"], "eval/last_val")} >= {
        "eval/last_val/confusion_matrix.png"}


def test_another_dataset_gets_its_own_metric_names(trained, tmp_path):
    from cifarctl.data.synth import SynthSpec, write_batches

    other = tmp_path / "other-synth"
    write_batches(other, SynthSpec(train_per_class=20, test_per_class=5, seed=1))
    result = run_eval(trained["run_id"], "--dataset", str(other), "--json",
                      "--checkpoints", str(trained["checkpoints"]))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["images"] == 50 and doc["dataset"] == str(other)
    assert set(doc["metrics"]) >= {"eval_other_synth_test_acc", "eval_other_synth_ece"}
    assert doc["train_counts"][0] == 50  # shot groups still by the run's own training set
    assert doc["artifact_dir"] == "eval/other_synth"


def test_checkpoint_comes_from_the_run_when_not_local(trained, tmp_path):
    result = run_eval(trained["run_id"], "--checkpoints", str(tmp_path / "elsewhere"),
                      "--no-log", "--json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / trained["run_id"] / "best.pt").is_file()


def test_a_damaged_local_checkpoint_points_to_the_runs_logged_copy(trained, tmp_path):
    import shutil

    root = tmp_path / "damaged"
    (root / trained["run_id"]).mkdir(parents=True)
    good = trained["checkpoints"] / trained["run_id"] / "best.pt"
    local = root / trained["run_id"] / "best.pt"
    shutil.copyfile(good, local)
    local.write_bytes(local.read_bytes()[:1000])
    result = run_eval(trained["run_id"], "--checkpoints", str(root), "--no-log", "--json")
    assert result.exit_code == 2
    assert result.output.strip().endswith(f"; to evaluate the copy logged to the run "
                                          f"instead, if it has one, delete {local}")
    local.unlink()
    again = run_eval(trained["run_id"], "--checkpoints", str(root), "--no-log", "--json")
    assert again.exit_code == 0, again.output


def test_report_shows_the_trained_runs_confusion_matrix(trained, tmp_path):
    from mlflow.tracking import MlflowClient

    from cifarctl.checkpoint import load_checkpoint

    client = MlflowClient(trained["uri"])
    local = client.download_artifacts(trained["run_id"], "confusion_matrix.json", str(tmp_path))
    best = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "best.pt")["best"]
    assert json.loads(Path(local).read_text()) == best["metrics"]["test_confusion"]
    # its own eval, logged to the run (tests of this module may run on other pytest workers)
    assert run_eval(trained["run_id"]).exit_code == 0
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", "-e", "eval", "--out", str(out), "--no-log",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    _valid_png(out / "confusion_matrices.png")
    doc = json.loads(result.stdout)
    assert doc["per_class"][0]["n"] == 1 and doc["per_class"][0]["test_acc"]["ci95"] is None
    # eval metrics of the run appear in table 1 once logged
    assert "eval_ece" in doc["per_class"][0]
    # a figure the runs cannot give is named, with the reason
    assert "no accuracy-vs-β figure" in (out / "report.md").read_text()


def test_val_split_needs_one(trained, tmp_path):
    from cifarctl.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "best.pt")
    state["config"]["data"]["val_per_class"] = 0
    save_checkpoint(tmp_path / "no-val.pt", state)
    result = run_eval(str(tmp_path / "no-val.pt"), "--split", "val")
    assert result.exit_code == 2 and "no validation split" in result.output
    assert "(it trained with data.val_per_class=0)" in result.output
    # the reasons the defaults give: long-tailed runs keep none; balanced ones a tenth of
    # each class, none of a class of six images
    from cifarctl.data.synth import SynthSpec, write_batches

    write_batches(tmp_path / "six", SynthSpec(train_per_class=6, test_per_class=3, seed=0))
    for data, why in ({"imbalance": 5.0}, "long-tailed runs keep none by default"), (
            {"imbalance": 1.0, "dataset": str(tmp_path / "six")},
            "a tenth of its classes' images is none"):
        state["config"]["data"] |= {"val_per_class": None, **data}
        save_checkpoint(tmp_path / "default.pt", state)
        result = run_eval(str(tmp_path / "default.pt"), "--split", "val", "--no-log")
        assert result.exit_code == 2 and why in result.output, result.output


@pytest.mark.parametrize("args, message", [
    (["0123456789abcdef0123456789abcdef"], "unknown run id"),
    (["RUN", "--tracking-uri", "sqlite:///typo/mlflow.db"], "no MLflow store at"),
    (["nope.pt"], "neither a checkpoint file nor an MLflow run id"),
    (["RUN", "--which", "worst"], "--which must be one of best, last"),
    (["RUN", "--split", "train"], "--split must be test or val"),
    (["RUN", "--corruption", "blurr"], "did you mean 'blur'"),
    (["RUN", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["GARBAGE"], "cannot read checkpoint"),
    (["TEXT"], "not a torch checkpoint"),  # torch's legacy reader: a bare KeyError
    (["RUN", "--device", "tpu"], "unknown device 'tpu'"),
    (["RUN", "--device", "mps"], "device 'mps' is not supported"),
    (["BARE"], "has no checkpoint (looked for"),
    (["FAILED"], "ended FAILED before saving any checkpoint"),
    (["PARENT"], "is a sweep's parent run: its trials are its child runs"),
    (["BEST", "--which", "last"], "is a checkpoint file already: drop --which"),
    # the run's own store named but down: an error, not "belongs to no run" and no logging
    (["BEST", "--tracking-uri", "http://127.0.0.1:9"], "cannot reach MLflow tracking server"),
])
def test_bad_input_exits_2_with_one_line(trained, tmp_path, args, message):
    from cifarctl.tracking.mlflow_tracker import start_run

    if args[0] == "GARBAGE":
        (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
        args = [str(tmp_path / "garbage.pt")]
    if args[0] == "TEXT":
        (tmp_path / "notes.pt").write_text("hello")
        args = [str(tmp_path / "notes.pt")]
    if args[0] in ("BARE", "FAILED", "PARENT"):
        tags = {"cifarctl.sweep_key": "c0ffee"} if args[0] == "PARENT" else None
        bare = start_run(experiment="eval-bare", tracking_uri=trained["uri"], tags=tags)
        bare.finish("FAILED" if args[0] == "FAILED" else "FINISHED")
        args = [bare.run_id, "--checkpoints", str(tmp_path)]
    best = str(trained["checkpoints"] / trained["run_id"] / "best.pt")
    args = [trained["run_id"] if a == "RUN" else best if a == "BEST" else a for a in args]
    result = run_eval(*args, "--checkpoints", str(trained["checkpoints"]), "--no-log")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_run_that_has_not_finished_is_evaluated_with_a_warning(trained, tmp_path):
    """Its checkpoint is not what the run will end with: say so, with the epoch, and keep
    the epoch in the results."""
    from cifarctl.tracking.mlflow_tracker import start_run

    run = start_run(experiment="eval-killed", tracking_uri=trained["uri"])
    run.finish("KILLED")
    (tmp_path / run.run_id).mkdir()
    shutil.copyfile(trained["checkpoints"] / trained["run_id"] / "best.pt",
                    tmp_path / run.run_id / "best.pt")
    result = run_eval(run.run_id, "--checkpoints", str(tmp_path), "--no-log", "--json")
    assert result.exit_code == 0, result.output
    assert (f"warning: run {run.run_id} is KILLED: its best checkpoint was saved after 1 of 1 "
            f"epochs, not at the end of a finished run") in result.stderr
    assert "--no-log" not in result.stderr  # given already: not advised
    assert json.loads(result.stdout)["epoch"] == 1
    logged = run_eval(run.run_id, "--checkpoints", str(tmp_path), "--json")
    assert "or pass --no-log to keep these numbers off it" in logged.stderr


def test_help_lists_corruptions_and_stays_torch_free():
    import subprocess
    import sys

    code = ("import sys; from cifarctl.cli import app; "
            "print(sorted(m for m in ('torch', 'mlflow', 'pandas', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
    help_text = CliRunner().invoke(app, ["eval", "--help"]).output
    assert "phase_noise" in help_text and "--corruptions" in help_text


def test_an_ldam_runs_cosine_head_is_rebuilt_from_its_config(trained, tmp_path):
    """LDAM trains with the normed classifier (`model.classifier: auto`); eval rebuilds it
    from the checkpoint's config, measures the test accuracy training logged, and takes
    the loss and calibration of the softmax LDAM trains, over s * cos (s = 30), as a plain
    loop written here does."""
    import torch.nn.functional as F

    from cifarctl.checkpoint import load_checkpoint
    from cifarctl.config import load_config
    from cifarctl.data import load_dataset
    from cifarctl.models import create_model
    from cifarctl.tracking import NullTracker
    from cifarctl.training import train

    cfg = load_config(None, {
        "model.name": "vanillacnn", "data.dataset": str(trained["dataset"]),
        "optim.epochs": 1, "optim.batch_size": 32, "optim.warmup": 0, "optim.steps": [5],
        "data.val_per_class": 10, "data.imbalance": 5, "run.device": "cpu",
        "loss.name": "ldam", "run.save_best": False})
    outcome = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path)
    assert outcome.status == "FINISHED"
    path = outcome.checkpoint_dir / "last.pt"
    weights = load_checkpoint(path)["model"]
    assert "classifier.weight" in weights and "classifier.bias" not in weights
    result = run_eval(str(path), "--json", "--device", "cpu")  # where it trained (see BF16)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["accuracy"] == pytest.approx(outcome.history[-1]["test_acc"])

    model = create_model("vanillacnn", classifier="normed")
    model.load_state_dict(weights)
    model.eval()
    data = load_dataset(str(trained["dataset"]))
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    x = torch.stack([(torch.as_tensor(im).permute(2, 0, 1).float() / 255 - mean) / std
                     for im in data.test_images])
    y = torch.as_tensor(data.test_labels)
    with torch.no_grad():
        logits = 30.0 * model(x)
    assert logits.abs().max() <= 30.0 + 1e-4  # cosines in [-1, 1], times s
    loss = F.cross_entropy(logits, y).item()
    assert outcome.history[-1]["test_loss"] == pytest.approx(loss, rel=1e-4)
    assert doc["metrics"]["eval_last_test_loss"] == pytest.approx(loss, rel=1e-4)
    confidence, pred = logits.softmax(dim=1).max(dim=1)
    bins = (confidence * 15).long().clamp(max=14)
    ece = sum(abs((pred[bins == b] == y[bins == b]).float().sum() - confidence[bins == b].sum())
              for b in range(15)) / len(y)
    assert doc["ece"] == pytest.approx(float(ece), abs=1e-5)


def test_a_checkpoint_from_before_model_classifier_evaluates_with_its_linear_head(trained,
                                                                                  tmp_path):
    """An LDAM checkpoint whose config predates `model.classifier` (linear head, as every
    run then had) loads and evaluates; `auto` would have built a cosine head."""
    from cifarctl.checkpoint import load_checkpoint
    from cifarctl.config import load_config
    from cifarctl.tracking import NullTracker
    from cifarctl.training import train

    cfg = load_config(None, {
        "model.name": "vanillacnn", "data.dataset": str(trained["dataset"]),
        "optim.epochs": 1, "optim.batch_size": 32, "optim.warmup": 0, "optim.steps": [5],
        "data.val_per_class": 10, "data.imbalance": 5, "run.device": "cpu",
        "loss.name": "ldam", "loss.s": 2.0, "model.classifier": "linear",
        "run.save_best": False})
    outcome = train(cfg, tracker=NullTracker(), checkpoint_root=tmp_path)
    state = load_checkpoint(outcome.checkpoint_dir / "last.pt")
    del state["config"]["model"]["classifier"]
    old = tmp_path / "old.pt"
    torch.save(state, old)
    result = run_eval(str(old), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(
        outcome.history[-1]["test_acc"])


def test_weights_that_do_not_fit_their_config_are_one_line(trained, tmp_path):
    from cifarctl.checkpoint import load_checkpoint

    state = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "last.pt")
    state["config"]["model"]["classifier"] = "normed"  # the weights hold a linear head
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    result = run_eval(str(bad))
    assert result.exit_code == 2
    assert "does not hold the weights its config describes" in result.output
    assert "vanillacnn with a normed classifier over 10 classes" in result.output
    assert "Traceback" not in result.output
    # a head over another number of classes (a run on a 3-class image folder, say): said so
    state["config"]["model"]["classifier"] = "linear"
    for name in ("classifier.weight", "classifier.bias"):
        state["model"][name] = state["model"][name][:3]
    torch.save(state, bad)
    result = run_eval(str(bad))
    assert result.exit_code == 2
    assert (f"{bad} was trained on 3 classes, but {trained['dataset']} has 10; evaluate it on "
            f"data with its classes") in result.output


def _fingerprint(dataset: Path) -> str:
    from cifarctl.data import load_dataset

    return load_dataset(str(dataset)).fingerprint


def test_data_that_is_not_what_the_run_trained_on_is_warned_about(trained, tmp_path):
    """No error (the numbers are real), but a warning line and the JSON's `warnings`: the
    run's own dataset changed since it trained, or another dataset with other classes."""
    import json

    from cifarctl.checkpoint import load_checkpoint, save_checkpoint
    from cifarctl.data import cifar_batches
    from cifarctl.data.synth import SynthSpec, generate

    state = load_checkpoint(trained["checkpoints"] / trained["run_id"] / "best.pt")
    assert state["dataset_fingerprint"]  # written by the run
    same = run_eval(trained["run_id"], "--checkpoints", str(trained["checkpoints"]),
                    "--no-log", "--json")
    assert same.exit_code == 0 and json.loads(same.stdout)["warnings"] == []

    state["dataset_fingerprint"] = "0123456789abcdef"  # as if trained on another version
    save_checkpoint(tmp_path / "older.pt", state)
    result = run_eval(str(tmp_path / "older.pt"), "--no-log", "--json")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "is not the data this run trained on" in result.stderr
    doc = json.loads(result.stdout)
    assert "fingerprint" in doc["warnings"][0]
    # not under the run's own names, which `report` reads as its test set
    prefix = f"eval_data_{_fingerprint(trained['dataset'])[:8]}_"
    assert "eval_test_acc" not in doc["metrics"] and "eval_ece" not in doc["metrics"]
    assert doc["metrics"][f"{prefix}test_acc"] == pytest.approx(doc["accuracy"])
    assert f"{prefix}ece" in doc["metrics"] and doc["artifact_dir"] == f"eval/{prefix[5:-1]}"
    assert len(doc["warnings"]) == 1  # logged nowhere: no word on the names it would use
    attached = tmp_path / trained["run_id"] / "older.pt"  # a file in a run's folder: its run
    attached.parent.mkdir()
    save_checkpoint(attached, state)
    logged = run_eval(str(attached), "--json")
    assert logged.exit_code == 0, logged.output
    assert f"logged as {prefix}*" in json.loads(logged.stdout)["warnings"][1]

    arrays = generate(SynthSpec(train_per_class=3, test_per_class=3, seed=2))
    renamed = arrays._replace(classes=tuple(f"thing{i}" for i in range(10)))
    cifar_batches.write(tmp_path / "other", renamed)
    other = run_eval(trained["run_id"], "--checkpoints", str(trained["checkpoints"]),
                     "--dataset", str(tmp_path / "other"), "--no-log", "--json")
    assert other.exit_code == 0, other.output
    (warning,) = json.loads(other.stdout)["warnings"]
    assert "thing0" in warning and "are not the run's" in warning


# ---- post-hoc logit adjustment (issue 18) ---------------------------------------------------

def test_post_hoc_adjustment_at_tau_0_is_the_plain_evaluation(trained):
    from cifarctl.evaluation.run import evaluate_target, resolve_target

    target = resolve_target(trained["run_id"], checkpoint_root=trained["checkpoints"])
    result = evaluate_target(target, logit_adjust=[0.0, 1.0])
    plain, adjusted = result.logit_adjusted
    assert (plain["tau"], adjusted["tau"]) == (0.0, 1.0)
    assert plain["accuracy"] == result.accuracy and plain["per_class"] == result.per_class
    assert plain["shots"] == result.shots
    assert result.metrics["eval_la0_test_acc"] == result.metrics["eval_test_acc"]
    assert {"eval_la1_test_acc", "eval_la1_test_acc_class_9", "eval_la1_few_acc"} <= \
        set(result.metrics)


def test_cli_logit_adjust_logs_each_tau_under_its_own_names(trained):
    from mlflow.tracking import MlflowClient

    result = run_eval(trained["run_id"], "--logit-adjust", "1", "--logit-adjust", "0.5,2",
                      "--json", "--checkpoints", str(trained["checkpoints"]))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [row["tau"] for row in doc["logit_adjusted"]] == [1.0, 0.5, 2.0]
    metrics = MlflowClient(trained["uri"]).get_run(trained["run_id"]).data.metrics
    for row in doc["logit_adjusted"]:
        assert metrics[row["metric"]] == pytest.approx(row["accuracy"])
    assert {"eval_la0.5_test_acc", "eval_la2_test_acc_class_9", "eval_la1_few_acc"} <= \
        set(metrics)
    assert metrics["eval_test_acc"] == pytest.approx(doc["accuracy"])  # the plain model's
    table = run_eval(trained["run_id"], "--logit-adjust", "1", "--no-log",
                     "--checkpoints", str(trained["checkpoints"]))
    assert "post-hoc logit adjustment" in table.output and "eval_la<tau>_*" in table.output


@pytest.mark.parametrize("value", ["-1", "abc", "inf"])
def test_a_bad_logit_adjust_is_one_line(trained, value):
    result = run_eval(trained["run_id"], "--logit-adjust", value, "--no-log")
    assert result.exit_code == 2 and "--logit-adjust takes numbers tau >= 0" in result.output
    assert "Traceback" not in result.output


def test_post_hoc_adjustment_uses_the_prior_the_run_sampled(trained):
    """A class-balanced run trained under a uniform prior: adjusting by it changes nothing."""
    from cifarctl.config import apply_overrides
    from cifarctl.evaluation.run import evaluate_target, resolve_target

    target = resolve_target(trained["run_id"], checkpoint_root=trained["checkpoints"])
    target.cfg = apply_overrides(target.cfg, {"data.sampler": "class-balanced"})
    result = evaluate_target(target, logit_adjust=[2.0])
    (adjusted,) = result.logit_adjusted
    assert adjusted["per_class"] == result.per_class


def test_accuracies_are_exact_ratios_of_counts():
    """15 of 2000 right is 15 / 2000 as Python computes it, 0.75 %, shown as 0.8 % by every
    command; float32's 0.0074999998 showed as 0.7 % here and 0.8 % where Python redid the
    division (463 of the 2,001 ratios k / 2000 round differently)."""
    from cifarctl.engine import EvalCounts, eval_metrics, to_host

    confusion = torch.tensor([[15, 1985], [0, 0]])
    host = to_host(eval_metrics("test", EvalCounts(confusion, torch.tensor(1000.0),
                                                   torch.zeros(15, 3))))
    assert host["test_acc"] == 15 / 2000 and f"{100 * host['test_acc']:.1f}" == "0.8"
    assert host["test_acc_class_0"] == 15 / 2000 and host["test_loss"] == 0.5


def test_run_eval_is_the_command_in_one_call(trained, monkeypatch):
    """`run_eval` checks the options, evaluates and logs, as `cifarctl eval` does."""
    from cifarctl.errors import UsageError
    from cifarctl.evaluation.run import run_eval

    with pytest.raises(UsageError, match="--batch-size must be >= 1"):
        run_eval(trained["run_id"], batch_size=0)
    with pytest.raises(UsageError, match="unknown corruption"):
        run_eval(trained["run_id"], corruptions=["fog"])
    monkeypatch.setenv("CIFARCTL_DATA", str(trained["folder"] / "cache"))
    result = run_eval(trained["run_id"], checkpoint_root=trained["checkpoints"], log=False,
                      tracking_uri=trained["uri"], device="cpu")
    assert result.run_id == trained["run_id"] and not result.logged
    assert 0 <= result.accuracy <= 1 and result.corruptions == {}
