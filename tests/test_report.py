"""`cifarctl report` on a real MLflow store written through the tracking interface (issue 6).

The store holds runs with known metric values: CE, CB-focal beta 0.9 and CB-focal beta
0.999 on long-tailed CIFAR-10 (ratio 100), three seeds each, plus a KILLED run, a run with
no metrics, a sweep parent with two children, runs following SPEC 2's protocol and an
empty experiment. Every table number is checked against a hand computation written out
here (Student t quantiles from printed tables, the closed-form t CDF for df = 2).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cifarctl.cli import app

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LT100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # SPEC 1.3
SEEDS = (0, 1, 2)
T975_DF2 = 4.302653  # Student t 0.975 quantile, 2 degrees of freedom (n = 3 seeds)
T975_DF1 = 12.706205
# Per-class accuracies of each configuration (the write-up's rows, SPEC 1.3) plus a per-seed
# offset, so every number below has a simple closed form.
CONFIGS = {
    "CE": ({"loss.name": "ce", "loss.beta": 0.0},
           [.89, .98, .75, .63, .73, .53, .84, .65, .40, .48], (0.00, 0.01, 0.02)),
    "CB-focal β=0.9": ({"loss.name": "focal", "loss.beta": 0.9},
                       [.94, .98, .76, .69, .72, .51, .62, .51, .36, .24], (0.01, 0.01, 0.04)),
    "CB-focal β=0.999": ({"loss.name": "focal", "loss.beta": 0.999},
                         [.91, .93, .60, .56, .58, .55, .71, .65, .50, .51], (0.00, 0.02, 0.01)),
}
PROTOCOL = {"model.name": "resnet32", "optim.epochs": 200, "optim.batch_size": 128,
            "optim.lr": 0.1, "optim.warmup": 5, "optim.steps": [160, 180],
            "optim.decay": [0.01, 0.01], "optim.weight_decay": 2e-4}


def mean(xs):
    return sum(xs) / len(xs)


def sd(xs):
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def write_run(uri: str, experiment: str, overrides: dict, accs: list[float] | None, *,
              status: str = "FINISHED", parent: str | None = None, confusion=None,
              tags: dict | None = None) -> str:
    """One run as `cifarctl train` records it: params, tags, 2 epochs, summary metrics."""
    from cifarctl.config import load_config
    from cifarctl.tracking.mlflow_tracker import start_run

    cfg = load_config(None, {"data.imbalance": 100, "model.name": "resnet32",
                             "optim.epochs": 2, **overrides})
    tags = {"class_counts": ",".join(map(str, LT100)), "class_names": ",".join(NAMES),
            "dataset": "cifar10", "loss": cfg.loss.name, **(tags or {})}
    tracker = start_run(experiment=experiment, tracking_uri=uri, parent_run_id=parent,
                        run_name=f"{cfg.loss.name}-b{cfg.loss.beta:g}-s{cfg.run.seed}",
                        tags=tags)
    tracker.log_params(cfg.to_flat())
    if accs is not None:  # two epochs; the summary metrics come with the last (best) one
        overall = mean(accs)
        tracker.log_metrics({"test_acc": overall / 2, "test_loss": 2.0}, step=0)
        tracker.log_metrics({"test_acc": overall, "test_loss": 1.5, "test_acc_at_best": overall,
                             "best_epoch": 1,
                             **{f"test_acc_class_{i}_at_best": a for i, a in enumerate(accs)}},
                            step=1)
    if confusion is not None:
        tracker.log_text(json.dumps(confusion), "confusion_matrix.json")
    tracker.finish(status)
    return tracker.run_id


def accs_of(label: str, seed: int) -> list[float]:
    _, base, offsets = CONFIGS[label]
    return [a + offsets[seed] for a in base]


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_template_db) -> dict:
    """The store described in the module docstring; its uri and the ids tests need."""
    from cifarctl.tracking.mlflow_tracker import connect, get_or_create_experiment, start_run

    folder = tmp_path_factory.mktemp("report-store")
    shutil.copyfile(_mlflow_template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    confusion = [[90 if i == j else 1 for j in range(10)] for i in range(10)]
    for label, (overrides, _, _) in CONFIGS.items():
        for seed in SEEDS:
            write_run(uri, "lt100", {**overrides, "run.seed": seed}, accs_of(label, seed),
                      confusion=confusion if label == "CE" else None)
    killed = write_run(uri, "lt100", {"run.seed": 3}, accs_of("CE", 0), status="KILLED")
    bare = write_run(uri, "lt100", {"run.seed": 4}, None)
    parent = write_run(uri, "sweep", {}, None)
    start_run(experiment="sweep", tracking_uri=uri, run_id=parent).log_params(
        {"sweep.key": "c0ffee", "grid.loss.beta": "[0.99]"})  # what cifarctl sweep logs
    for seed in (0, 1):
        write_run(uri, "sweep", {"loss.name": "focal", "loss.beta": 0.99, "run.seed": seed},
                  [0.6 + 0.02 * seed] * 10, parent=parent)
    for seed, acc in ((0, 0.70), (1, 0.72)):
        write_run(uri, "protocol", {**PROTOCOL, "run.seed": seed}, [acc] * 10)
    write_run(uri, "protocol", {**PROTOCOL, "loss.name": "focal", "loss.gamma": 1.0},
              [0.705] * 10)
    get_or_create_experiment(connect(uri), "empty")
    return {"uri": uri, "killed": killed, "bare": bare, "parent": parent, "folder": folder}


def report(store, *args: str):
    result = CliRunner().invoke(app, ["report", "--tracking-uri", store["uri"], *args])
    return result


def build(store, **kwargs):
    from cifarctl.report.build import build_report

    return build_report(store["uri"], **kwargs)


@pytest.mark.parametrize("kwargs", [{"experiments": ["lt100"]}, {}, {"parent": "PARENT"}])
def test_sqlite_fast_path_reads_what_mlflow_reads(store, kwargs):
    """The same frame, cell by cell and row by row (more cases: tests/test_runstore.py)."""
    import pandas as pd

    from cifarctl.report.runs import load_runs

    kwargs = {k: store["parent"] if v == "PARENT" else v for k, v in kwargs.items()}
    fast = load_runs(store["uri"], reader="sqlite", **kwargs)
    slow = load_runs(store["uri"], reader="mlflow", **kwargs)
    assert fast.experiments == slow.experiments
    pd.testing.assert_frame_equal(fast.frame, slow.frame)
    assert len(fast.frame) >= 2


def test_per_class_table_means_and_intervals(store):
    rep = build(store, experiments=["lt100"])
    assert [r.label for r in rep.per_class] == list(CONFIGS)
    assert rep.class_names == NAMES
    for row, (_, base, offsets) in zip(rep.per_class, CONFIGS.values()):
        assert row.n == 3 and sorted(row.seeds) == ["0", "1", "2"]
        overall = [mean(base) + o for o in offsets]
        assert row.overall.mean == pytest.approx(mean(overall))
        assert row.overall.ci95 == pytest.approx(T975_DF2 * sd(offsets) / math.sqrt(3),
                                                 rel=1e-5)
        for i, cell in enumerate(row.classes):
            assert cell.mean == pytest.approx(base[i] + mean(offsets))
            assert cell.ci95 == pytest.approx(T975_DF2 * sd(offsets) / math.sqrt(3), rel=1e-5)
        # LT-100: classes 0-7 have > 100 images (many-shot), 8-9 have 83 and 50 (medium)
        assert row.shots["many"].mean == pytest.approx(mean(base[:8]) + mean(offsets))
        assert row.shots["medium"].mean == pytest.approx(mean(base[8:]) + mean(offsets))
        assert row.shots["few"] is None
        assert row.worst == min(range(10), key=lambda i: base[i])
    assert any("few-shot" in n and "no class qualifies in any" in n for n in rep.notes)
    reasons = {s["run_id"]: s["reason"] for s in rep.skipped}
    assert reasons[store["killed"]].startswith("status KILLED")
    assert "no test_acc_at_best" in reasons[store["bare"]]


def test_head_to_head_is_a_paired_test_over_seeds(store):
    rep = build(store, experiments=["lt100"])
    assert [(c.label, c.baseline) for c in rep.head_to_head] == [
        ("CB-focal β=0.9", "CE"), ("CB-focal β=0.999", "CE")]
    _, ce_base, ce_off = CONFIGS["CE"]
    for comp in rep.head_to_head:
        _, base, offsets = CONFIGS[comp.label]
        d = [mean(base) - mean(ce_base) + o - c for o, c in zip(offsets, ce_off)]
        t = mean(d) / (sd(d) / math.sqrt(3))
        p = 1 - abs(t) / math.sqrt(2 + t * t)  # two-sided, df = 2, closed form
        assert comp.overall.kind == "paired" and comp.overall.n == 3
        assert comp.matched_seeds == ["0", "1", "2"]
        assert comp.overall.diff == pytest.approx(mean(d))
        assert comp.overall.ci95 == pytest.approx(T975_DF2 * sd(d) / math.sqrt(3), rel=1e-5)
        assert comp.overall.p == pytest.approx(p, rel=1e-6)
        for i, cls in enumerate(comp.classes):
            assert cls.diff == pytest.approx(base[i] - ce_base[i] + mean(offsets) - mean(ce_off))
        size = f"{abs(mean(d)) * 100:.1f}"
        word = "better" if mean(d) > 0 else "worse"
        expected = (f"within noise (p={float(f'{p:.2g}'):g}, n=3)" if p >= 0.05 else
                    f"{word} by {size} ± {T975_DF2 * sd(d) / math.sqrt(3) * 100:.1f} points "
                    f"(p={float(f'{p:.2g}'):g}, n=3)")
        assert comp.verdict == expected


def test_terminal_tables(store):
    result = report(store, "-e", "lt100")
    assert result.exit_code == 0, result.output
    out = result.output
    for text in ("Test accuracy per class (%)", "Head-to-head", "CB-focal β=0.999",
                 "9 truck", "Skipped runs", "status KILLED", "few-shot", "worse by 4.5",
                 "by class"):
        assert text in out, text
    ce = CONFIGS["CE"]
    ce_mean = (mean(ce[1]) + mean(ce[2])) * 100
    ce_ci = T975_DF2 * sd(ce[2]) / math.sqrt(3) * 100
    assert f"{ce_mean:.1f} ± {ce_ci:.1f}" in out


def test_terminal_tables_fit_80_columns_without_splitting_a_cell(store):
    """A wide table is cut into parts that each fit, the configuration repeated, rather than
    folded mid-word ('balance / d', 'corrupt / ion acc')."""
    from rich.console import Console

    from cifarctl.report.render import print_rich, split_to_width, terminal_tables

    rep = build(store, experiments=["lt100"])
    buffer = io.StringIO()
    print_rich(rep, Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Test accuracy per class (%) (continued)" in text
    for t in terminal_tables(rep):
        parts = split_to_width(t, 80)
        assert all(p.headers[0] == t.headers[0] for p in parts)
        assert sorted({h for p in parts for h in p.headers}) == sorted(set(t.headers))
        for part in parts:  # every short cell shows whole (a sentence wraps at spaces)
            for row in part.rows:
                assert all(cell in text for cell in row if cell and len(cell) <= 30)
    assert split_to_width(terminal_tables(rep)[0], 400) == [terminal_tables(rep)[0]]


def test_signed_numbers_are_right_aligned_in_the_terminal(store):
    """Head-to-head differences (`+6.0 ± 2.5*`, `-21.0 ± 2.5*`) line up on their right edge
    like every other number: a column's first cell starting with a sign made it ragged."""
    from rich.console import Console

    from cifarctl.report.render import print_rich

    rep = build(store, experiments=["lt100"])
    buffer = io.StringIO()
    print_rich(rep, Console(file=buffer, width=200, color_system=None))
    rows = [line for line in buffer.getvalue().splitlines()
            if line.startswith("│ 9 truck") and "±" in line]  # the by-class part of table 2
    assert rows
    for row in rows:
        cells = row.split("│")[2:-1]
        assert cells and all(c[-2] != " " for c in cells), row  # no padding after a number


def test_the_per_class_figure_names_its_configurations_and_their_spread(store):
    from cifarctl.report.figures import per_class_figures

    rep = build(store, experiments=["lt100"])
    ((name, caption, fig),) = per_class_figures(rep)
    ax = fig.axes[0]
    assert name == "per_class.png" and caption.startswith("Per-class test accuracy (")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [r.label for r in rep.per_class]
    assert ax.get_title().endswith(": mean ± 95 % CI over seeds")
    one = build(store, experiments=["lt100"], filter_string="params.`loss.beta` = '0.9'")
    ((_, _, fig),) = per_class_figures(one)
    assert len(one.per_class) == 1 and fig.axes[0].get_legend() is not None


def test_the_head_to_head_caption_says_its_per_class_tests_are_uncorrected(store):
    """Ten per-class stars are ten separate tests: a paper has to know that."""
    from cifarctl.report.render import head_to_head_table

    caption = head_to_head_table(build(store, experiments=["lt100"])).caption
    assert caption.endswith("* = p < 0.05, each test on its own (the 10 per-class tests are "
                            "not corrected for multiple comparisons).")


def test_csv_schema_and_values(store):
    result = report(store, "-e", "lt100", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    header = list(rows[0])
    expected = ["config", "model.name", "data.imbalance", "loss.name", "loss.beta",
                "loss.gamma", "n", "test_acc_mean", "test_acc_ci95"]
    for i in range(10):
        expected += [f"class_{i}_mean", f"class_{i}_ci95"]
    expected += ["many_mean", "many_ci95", "medium_mean", "medium_ci95", "few_mean", "few_ci95",
                 "worst_class", "worst_class_name", "worst_class_mean", "worst_class_ci95"]
    assert header == expected
    assert [r["config"] for r in rows] == list(CONFIGS)
    assert [r["loss.beta"] for r in rows] == ["0.0", "0.9", "0.999"]
    _, base, offsets = CONFIGS["CB-focal β=0.9"]
    assert float(rows[1]["test_acc_mean"]) == pytest.approx(mean(base) + mean(offsets))
    assert float(rows[1]["class_9_mean"]) == pytest.approx(base[9] + mean(offsets))
    assert rows[1]["n"] == "3" and rows[1]["few_mean"] == "" and rows[1]["worst_class"] == "9"
    assert rows[1]["worst_class_name"] == "truck"
    assert float(rows[1]["worst_class_mean"]) == pytest.approx(float(rows[1]["class_9_mean"]))
    noise = re.compile(r"0{8}\d$|9{8}\d$")  # 0.30000000000000004, 0.11149999999999999
    assert not any(noise.search(v) for r in rows for v in r.values())
    # a configuration with one run has a value and no interval
    single = list(csv.DictReader(io.StringIO(
        report(store, "-e", "protocol", "--format", "csv").output)))
    focal = next(r for r in single if r["loss.name"] == "focal")
    assert focal["n"] == "1" and focal["test_acc_ci95"] == "" and \
        float(focal["test_acc_mean"]) == pytest.approx(0.705)


def test_json_schema(store):
    result = report(store, "-e", "lt100", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc) >= {"source", "grouping_keys", "class_names", "per_class", "head_to_head",
                        "literature", "notes", "skipped_runs", "baseline", "confidence"}
    assert doc["confidence"] == 0.95 and doc["source"]["experiments"] == ["lt100"]
    row = doc["per_class"][0]
    assert set(row) >= {"config", "keys", "n", "seeds", "run_ids", "test_acc", "classes",
                        "many", "medium", "few", "worst_class", "train_counts"}
    assert set(row["test_acc"]) == {"mean", "ci95", "std", "n"}
    assert row["classes"][9]["name"] == "truck" and row["few"] is None
    assert row["train_counts"] == LT100
    h2h = doc["head_to_head"][0]
    assert set(h2h["test_acc_diff"]) == {"kind", "diff", "ci95", "t", "df", "p", "n"}
    assert len(h2h["class_diffs"]) == 10 and h2h["verdict"]
    assert {s["reason"][:14] for s in doc["skipped_runs"]} >= {"status KILLED:"}


def test_markdown_to_stdout(store):
    result = report(store, "-e", "lt100", "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# cifarctl report")
    assert "| config | n | overall | 0 airplane |" in result.output
    assert "## Head-to-head against the baseline" in result.output


def _valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()


def test_out_folder_pictures_and_report_run(store, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "rep"
    result = report(store, "-e", "lt100", "--format", "markdown", "--out", str(out))
    assert result.exit_code == 0, result.output
    pngs = {"curves.png", "per_class.png", "accuracy_vs_beta.png", "confusion_matrices.png"}
    assert {p.name for p in out.iterdir()} == pngs | {"report.md", "per_class.csv",
                                                      "report.json"}
    for name in pngs:
        _valid_png(out / name)
    md = (out / "report.md").read_text()
    for name in pngs:
        assert f"]({name})" in md
    assert "| CB-focal β=0.9 |" in md
    # the report run: its own experiment, tagged, holding the files
    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("lt100-reports")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["cifarctl.kind"] == "report"
    assert runs[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} == pngs | {
        "report.md", "per_class.csv", "report.json"}
    # reporting again, on every experiment: the report run is never read as a run
    again = build(store)
    assert "lt100-reports" not in again.experiments
    assert all(run_id != runs[0].info.run_id for r in again.per_class for run_id in r.run_ids)


def test_html_page(store, tmp_path):
    from cifarctl.report.export import export_report
    from cifarctl.tracking.runstore import open_store

    rep = build(store, experiments=["lt100"])
    written = export_report(rep, open_store(store["uri"]), tmp_path, fmt="html", figures=False)
    assert sorted(p.name for p in written.files) == ["per_class.csv", "report.html",
                                                     "report.json"]
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<td>CB-focal β=0.999</td>" in page
    assert "Head-to-head against the baseline" in page and "<img" not in page
    html_stdout = report(store, "-e", "lt100", "--format", "html")
    assert html_stdout.exit_code == 0 and "<table>" in html_stdout.output


def test_literature_table_for_protocol_runs(store):
    rep = build(store, experiments=["protocol"])
    rows = {(r.label, p.source): (r, p) for r in rep.literature for p in r.published}
    ce, cui = rows[("CE", "Cui et al. 2019")]
    assert cui.error == 29.64 and rows[("CE", "Cao et al. 2019")][1].error == 29.64
    assert ce.error.mean == pytest.approx(29.0)  # 1 - mean(0.70, 0.72)
    assert ce.error.ci95 == pytest.approx(T975_DF1 * sd([30.0, 28.0]) / math.sqrt(2), rel=1e-5)
    focal, published = rows[("focal", "Cui et al. 2019")]
    assert published.error == 29.62 and focal.error.n == 1
    # runs that do not follow the protocol are not compared, and the report says why
    lt = build(store, experiments=["lt100"])
    assert lt.literature == []
    assert any("no run follows the published protocol" in n and "optim.epochs=2" in n
               for n in lt.notes)


def test_parent_selects_the_sweep_children(store):
    result = report(store, "--parent", store["parent"], "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [(r["config"], r["n"]) for r in doc["per_class"]] == [("CB-focal β=0.99", 2)]
    assert doc["source"]["experiments"] == ["sweep"] and doc["head_to_head"] == []
    # the whole sweep experiment: the parent (no metrics of its own) is left out, said so,
    # and its params (as `cifarctl sweep` logs them: sweep.*, grid.*) group nothing
    rep = build(store, experiments=["sweep"])
    assert [(r.label, r.n) for r in rep.per_class] == [("CB-focal β=0.99", 2)]
    assert rep.skipped == [{"run_id": store["parent"], "run_name": "ce-b0-s0",
                            "reason": "parent of a sweep (its child runs are reported)"}]
    # ... in the JSON, but not worth a table or a note in the terminal: that is expected
    text = report(store, "--experiment", "sweep")
    assert text.exit_code == 0, text.output
    assert "Skipped runs" not in text.output and "left out" not in text.output
    assert not any(k.startswith(("sweep.", "grid.")) for k in rep.grouping_keys)


def test_by_keys_and_baseline(store):
    rep = build(store, experiments=["lt100"], by="loss.name")
    assert [(r.label, r.n) for r in rep.per_class] == [("CE", 3), ("focal", 6)]
    assert rep.grouping_keys == ["loss.name"]
    focal = build(store, experiments=["lt100"], baseline="loss.name=focal,loss.beta=0.999")
    assert [(c.label, c.baseline) for c in focal.head_to_head] == [
        ("CE", "CB-focal β=0.999"), ("CB-focal β=0.9", "CB-focal β=0.999")]


def test_default_experiments_and_their_note(store):
    rep = build(store)
    assert set(rep.experiments) == {"lt100", "sweep", "protocol"}
    assert any("choose with --experiment" in n for n in rep.notes)


@pytest.mark.parametrize("args, message", [
    (["-e", "nope"], "unknown experiment 'nope'"),
    (["-e", "empty"], "no runs"),
    (["-e", "lt100", "--filter", "params.loss.name === 'x'"], "invalid --filter"),
    (["-e", "lt100", "--filter", "params.`loss.name` = 'hinge'"], "no runs matching --filter"),
    (["-e", "lt100", "--format", "xml"], "--format must be one of"),
    (["-e", "lt100", "--by", "loss.nam"], "--by loss.nam: no run has 'params.loss.nam' (did "
                                          "you mean 'loss.name'?)"),
    (["-e", "lt100", "--by", "seed"], "--by seed: seeds are what each row averages over"),
    (["-e", "lt100", "--baseline", "ce"], "--baseline expects key=value"),
    (["-e", "lt100", "--no-log"], "--no-log only applies with --out"),
    (["--parent", "0" * 32], "unknown parent run id"),
    (["--parent", "KILLED"], "has no child runs: it is not a sweep's parent run"),
    (["--tracking-uri", "."], "is a folder (file) store, which MLflow no longer opens"),
])
def test_bad_input_exits_2_with_one_line(store, args, message):
    result = report(store, *(store["killed"] if a == "KILLED" else a for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.count("\n") == 1


def test_documented_filter_examples_parse(store):
    from cifarctl.errors import UsageError
    from cifarctl.report.runs import FILTER_EXAMPLES, load_runs

    for example in FILTER_EXAMPLES:  # the examples of --help and error messages
        try:
            load_runs(store["uri"], experiments=["lt100"], filter_string=example)
        except UsageError as err:
            assert "invalid --filter" not in str(err), example
    focal = load_runs(store["uri"], experiments=["lt100"], filter_string=FILTER_EXAMPLES[0])
    assert set(focal.frame["params.loss.name"]) == {"focal"} and len(focal.frame) == 6


def test_missing_store_file_is_an_error_not_a_new_store(tmp_path):
    missing = tmp_path / "typo" / "mlflow.db"
    result = CliRunner().invoke(app, ["report", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 2 and "no MLflow store at" in result.output
    assert not missing.parent.exists()


def test_only_unreportable_runs_exit_2(store):
    result = report(store, "-e", "lt100", "--filter", "attributes.status = 'KILLED'")
    assert result.exit_code == 2 and "status KILLED" in result.output


@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path):
    """benchmarks/report.py as a smoke test: 100 runs written through the tracking interface,
    reported by `cifarctl report` processes (JSON, tables, and through MLflow with --filter).

    The 3 s target for 500 runs is what the script measures (see the report's README
    section); here the bound is loose, because this suite shares its cores: it catches a
    report that became quadratic or slow to start, not scheduling noise.
    """
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "benchmarks" / "report.py"
    out = subprocess.run([sys.executable, str(script), "--runs", "100", "--epochs", "0",
                          "--repeat", "1", "--store", str(tmp_path), "--max-seconds", "20"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["runs"] == 100 and line["groups"] == 50


def test_a_repeated_run_counts_once_the_latest(mlflow_store):
    """`train` run twice with one config and seed (here once more in another experiment) is
    one replicate: n stays 2 and the interval is not narrowed by copied numbers."""
    from cifarctl.report.build import build_report

    uri = mlflow_store.uri
    first = write_run(uri, "a", {"run.seed": 0}, [0.40] * 10)
    write_run(uri, "a", {"run.seed": 1}, [0.50] * 10)
    latest = write_run(uri, "b", {"run.seed": 0}, [0.44] * 10)
    rep = build_report(uri, experiments=["a", "b"])
    (ce,) = rep.per_class
    assert ce.n == 2 and ce.overall.mean == pytest.approx(0.47)
    assert rep.skipped == [{"run_id": first, "run_name": "ce-b0-s0",
                            "reason": f"repeats run {latest} (same configuration and seed); "
                                      "the latest is reported"}]
    assert any("1 run(s) left out" in note for note in rep.notes)


def test_runs_on_regenerated_data_are_reported_apart(mlflow_store):
    """One `data.dataset` spec whose data changed between runs (other `dataset_fingerprint`
    tags): not seeds of one configuration, not repeats of each other, and each loss is
    compared with the baseline trained on the same data."""
    from cifarctl.report.build import build_report
    from cifarctl.report.render import header_lines

    uri = mlflow_store.uri
    old, new = {"dataset_fingerprint": "aaaa1111" * 4}, {"dataset_fingerprint": "bbbb2222" * 4}
    for seed in (0, 1):
        write_run(uri, "regen", {"run.seed": seed}, [0.40 + 0.01 * seed] * 10, tags=old)
        write_run(uri, "regen", {"run.seed": seed}, [0.60 + 0.01 * seed] * 10, tags=new)
        write_run(uri, "regen", {"run.seed": seed, "loss.name": "focal"},
                  [0.62 + 0.01 * seed] * 10, tags=new)
    rep = build_report(uri, experiments=["regen"])
    rows = {r.label: r for r in rep.per_class}
    assert set(rows) == {"CE (data aaaa1111)", "CE (data bbbb2222)", "focal"}
    assert rows["CE (data aaaa1111)"].overall.mean == pytest.approx(0.405)
    assert rows["CE (data bbbb2222)"].overall.mean == pytest.approx(0.605)
    assert [r.n for r in rep.per_class] == [2, 2, 2] and rep.skipped == []
    (focal,) = rep.head_to_head
    assert focal.baseline == "CE (data bbbb2222)"
    assert focal.overall.diff == pytest.approx(0.02)
    assert any("trained on different data" in note for note in rep.notes)

    for seed in (0, 1):  # one version of the data: nothing changes
        write_run(uri, "same", {"run.seed": seed}, [0.5] * 10, tags=new)
    same = build_report(uri, experiments=["same"])
    assert [r.label for r in same.per_class] == ["CE"]
    assert "2 runs in 1 configuration (grouped by nothing that varies)" in \
        header_lines(same)
    # its label says nothing of the setup: the header names what every run shares
    (shared,) = [line for line in header_lines(same) if line.startswith("every run: ")]
    assert shared.startswith("every run: model.name=resnet32, ") and "optim.epochs=2" in shared
    assert "data.imbalance=100.0" in shared and "loss." not in shared
    assert not any("different data" in note for note in same.notes)


def _log_eval(uri: str, run_id: str, corruptions: dict[str, float]) -> None:
    """What `cifarctl eval RUN --corruption A --corruption B` logs: each severity, and the
    mean over the corruptions of that call."""
    from cifarctl.tracking.runstore import open_store

    metrics = {f"eval_corruption_{name}_s{s}": acc - 0.01 * s
               for name, acc in corruptions.items() for s in range(1, 6)}
    metrics["eval_mean_corruption_acc"] = mean(list(metrics.values()))
    open_store(uri).tracker(run_id).log_metrics(metrics, step=0)


def test_corruption_accuracy_is_compared_over_the_same_corruptions(mlflow_store):
    """A run evaluated under blur and jpeg and one under blur alone: the column averages
    blur only, for both, and a note says so; with nothing in common there is no column."""
    from cifarctl.report.build import build_report

    uri = mlflow_store.uri
    a = write_run(uri, "corr", {"run.seed": 0}, [0.5] * 10)
    b = write_run(uri, "corr", {"run.seed": 1}, [0.5] * 10)
    plain = write_run(uri, "corr", {"run.seed": 2}, [0.5] * 10)  # never evaluated
    _log_eval(uri, a, {"blur": 0.40, "jpeg": 0.90})
    _log_eval(uri, b, {"blur": 0.50})
    (ce,) = build_report(uri, experiments=["corr"]).per_class
    blur = [0.40 - 0.03, 0.50 - 0.03]  # the mean over severities 1..5 of acc - 0.01 s
    summary = ce.extras["eval_mean_corruption_acc"]
    assert summary.n == 2 and summary.mean == pytest.approx(mean(blur))
    rep = build_report(uri, experiments=["corr"])
    assert any(note.startswith("corruption acc: mean over severities 1-5 of blur,")
               for note in rep.notes)
    assert plain in rep.per_class[0].run_ids

    _log_eval(uri, plain, {"contrast": 0.3})  # now none is common to all three
    rep = build_report(uri, experiments=["corr"])
    assert "eval_mean_corruption_acc" not in rep.per_class[0].extras
    assert any("none common to all" in note for note in rep.notes)


def test_out_folder_keeps_one_report_and_the_users_files(store, tmp_path):
    """Reporting again into a folder removes what the earlier report wrote and this one does
    not (a figure it has no data for, report.md after --format html); other files stay."""
    out = tmp_path / "rep"
    first = report(store, "-e", "lt100", "--out", str(out), "--no-log")
    assert first.exit_code == 0, first.output
    assert (out / "accuracy_vs_beta.png").exists() and (out / "report.md").exists()
    (out / "notes.txt").write_text("mine")
    (out / "per_class_2.png").write_bytes(b"left by a report with two training-count sets")
    again = report(store, "-e", "protocol", "--format", "html", "--out", str(out), "--no-log")
    assert again.exit_code == 0, again.output
    assert {p.name for p in out.iterdir()} == {"curves.png", "per_class.png", "report.html",
                                               "per_class.csv", "report.json", "notes.txt"}


def test_out_folder_that_cannot_be_written_is_one_line_and_writes_nothing(store, tmp_path):
    """A folder in the way of report.json: one line, and none of the other files written
    (a half report beside an old one would mislead); --out naming a file: one line."""
    out = tmp_path / "rep"
    (out / "report.json").mkdir(parents=True)
    result = report(store, "-e", "lt100", "--out", str(out), "--no-log")
    assert result.exit_code == 2
    assert "report.json there is a folder, where the report writes a file" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["report.json"]
    (tmp_path / "r.csv").write_text("mine")
    as_file = report(store, "-e", "lt100", "--out", str(tmp_path / "r.csv"), "--no-log")
    assert as_file.exit_code == 2 and "r.csv is a file; give a folder" in as_file.output


def test_a_failed_write_leaves_the_previous_report_whole(store, tmp_path, monkeypatch):
    from cifarctl.report import render

    out = tmp_path / "rep"
    assert report(store, "-e", "lt100", "--out", str(out), "--no-log").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(report):
        raise OSError(28, "No space left on device", "report.json")

    monkeypatch.setattr(render, "to_json", full_disk)
    failed = report(store, "-e", "lt100", "--out", str(out), "--no-log", "--by", "loss.name")
    assert failed.exit_code == 2 and "No space left on device" in failed.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder either


def test_an_experiment_of_report_runs_points_to_the_one_reported(mlflow_store):
    from cifarctl.tracking.mlflow_tracker import start_run

    start_run(experiment="lt100-reports", tracking_uri=mlflow_store.uri,
              tags={"cifarctl.kind": "report"}).finish()
    result = CliRunner().invoke(app, ["report", "--tracking-uri", mlflow_store.uri,
                                      "-e", "lt100-reports"])
    assert result.exit_code == 2
    assert "holds only report runs (1)" in result.output and "-e lt100" in result.output
    assert "Traceback" not in result.output


def test_a_config_key_added_later_reads_as_its_default_in_runs_that_never_logged_it(
        monkeypatch):
    """Runs from before a key existed trained with its default: they group with runs that
    logged the default (config.later_defaults), so a new key splits no earlier group."""
    import cifarctl.config
    from cifarctl.report.runs import runs_frame
    from cifarctl.tracking.stored import Selection, StoredRun

    monkeypatch.setattr(cifarctl.config, "later_defaults", lambda: {"loss.tau": 1.0,
                                                                    "data.sampler": "instance"})
    runs = [StoredRun(f"{i:032x}", "1", "FINISHED", f"r{i}", i, None, params=params)
            for i, params in enumerate([{"loss.name": "ce"},
                                        {"loss.name": "ce", "loss.tau": "1.0"},
                                        {"loss.name": "la", "loss.tau": "2.0"}])]
    frame = runs_frame(Selection(runs, {"1": "e"}))
    assert list(frame["params.loss.tau"]) == ["1.0", "1.0", "2.0"]
    assert "params.data.sampler" not in frame  # no run logged it: the report is as it was


def test_report_to_is_the_command_in_one_call(store, tmp_path):
    """`report_to` builds, writes --out and logs the report run, as `cifarctl report --out`
    does; without --out nothing is written or logged, and --no-log needs --out."""
    from cifarctl.errors import UsageError
    from cifarctl.report.export import report_to

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a copy: a report run is logged to it
    shutil.copyfile(store["uri"].removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    plain = report_to(uri, experiments=["lt100"])
    assert plain.written is None and plain.run_id is None and plain.report.per_class
    with pytest.raises(UsageError, match="--no-log only applies with --out"):
        report_to(uri, log=False, experiments=["lt100"])
    done = report_to(uri, out=tmp_path / "rep", experiments=["lt100"])
    assert (tmp_path / "rep" / "report.md").is_file() and len(done.run_id) == 32
    quiet = report_to(uri, out=tmp_path / "rep2", log=False, experiments=["lt100"])
    assert quiet.written is not None and quiet.run_id is None


FINAL = "final epoch (no validation split)"
BEST_VAL = "best validation epoch"


def test_the_report_says_which_epoch_each_number_comes_from(tmp_path, _mlflow_template_db):
    """Table 1's caption names the runs' epoch rule (their `selection` tag), and a note flags
    a configuration, or a comparison, that sets a best-validation epoch beside a final one."""
    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed in (0, 1):
        write_run(uri, "sel", {"run.seed": seed}, accs_of("CE", seed), tags={"selection": FINAL})
        write_run(uri, "sel", {"loss.name": "focal", "loss.beta": 0.999, "run.seed": seed,
                               "data.val_per_class": 50}, accs_of("CB-focal β=0.999", seed),
                  tags={"selection": BEST_VAL})
    write_run(uri, "sel", {"loss.name": "focal", "loss.beta": 0.999, "run.seed": 2},
              accs_of("CB-focal β=0.999", 2), tags={"selection": FINAL})
    only_final = build({"uri": uri}, experiments=["sel"],
                       filter_string=f"tags.selection = '{FINAL}'")
    from cifarctl.report.render import per_class_table

    assert f"n = runs; each run at its {FINAL}. " in per_class_table(only_final).caption
    assert not [n for n in only_final.notes if "different epochs" in n]

    result = report({"uri": uri}, "-e", "sel", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert sorted(map(str, (r["selection"] for r in data["per_class"]))) == sorted(map(str, [
        {FINAL: 2}, {BEST_VAL: 2}, {FINAL: 1}]))
    val_config = next(r["config"] for r in data["per_class"] if r["selection"] == {BEST_VAL: 2})
    base = next(c["baseline"] for c in data["head_to_head"] if c["config"] == val_config)
    assert (f"{val_config} and its baseline {base} report different epochs ({BEST_VAL} "
            f"against {FINAL})") in data["notes"]
    markdown = report({"uri": uri}, "-e", "sel", "--format", "markdown").output
    assert f"each run at the epoch its `selection` tag names: {BEST_VAL}; {FINAL}" in markdown

    pooled = build({"uri": uri}, experiments=["sel"], by="loss.name,loss.beta")
    (mixed,) = [n for n in pooled.notes if "its runs report different epochs" in n]
    assert mixed.startswith("CB-focal β=0.999: its runs report different epochs (") and \
        f"{BEST_VAL}: 2" in mixed and f"{FINAL}: 1" in mixed


def test_latex_escapes_text_and_turns_the_reports_symbols_into_math():
    from cifarctl.report.latex import escape

    assert escape("CB-focal β=0.999 γ=2") == r"CB-focal $\beta$=0.999 $\gamma$=2"
    assert escape("+2.1 ± 1.3*") == r"+2.1 $\pm$ 1.3*"
    assert escape("a_b & 50% #1 {x} $ ~ ^ \\ <p> |") == (
        r"a\_b \& 50\% \#1 \{x\} \$ \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"\textless{}p\textgreater{} \textbar{}")
    assert escape("Cao et al. †, ours − published, Δ overall, café, 猫") == (
        r"Cao et al. $^\dagger$, ours $-$ published, $\Delta$ overall, café, ?")


def test_latex_format_is_tables_a_paper_can_input(store, tmp_path):
    """`--format latex`: one booktabs float per table with the other formats' captions, every
    row with a cell per column; pdflatex compiles it (where installed: .ci/run installs it)."""
    import shutil as sh
    import subprocess as sp

    result = report(store, "-e", "lt100", "-e", "protocol", "--format", "latex")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert text.startswith("% cifarctl report; preamble: \\usepackage{booktabs,graphicx}")
    assert text.count(r"\begin{table}[ht]") == 3  # per class, head-to-head, literature
    for label in ("per-class", "head-to-head", "literature"):
        assert rf"\label{{tab:{label}}}" in text
    assert r"\caption{Test accuracy per class (\%). mean $\pm$ 95 \% CI" in text
    for block in text.split(r"\begin{tabular}")[1:]:
        spec, rest = block.split("}", 2)[0].lstrip("{"), block.split(r"\end{tabular}")[0]
        rows = [r for r in rest.splitlines() if r.endswith(r" \\")]
        assert rows and all(r.count(" & ") == len(spec) - 1 for r in rows), spec
    if sh.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-recommended)")
    (tmp_path / "tables.tex").write_text(text)
    (tmp_path / "paper.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs,"
                                        "graphicx}\n\\begin{document}\n\\input{tables}\n"
                                        "\\end{document}\n")
    done = sp.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
                  cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000


def test_out_with_latex_writes_report_tex_in_place_of_report_md(store, tmp_path):
    out = tmp_path / "rep"
    result = report(store, "-e", "lt100", "--format", "latex", "--out", str(out), "--no-log")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # the tables are in the file
    names = {p.name for p in out.iterdir()}
    assert "report.tex" in names and "report.md" not in names and "report.json" in names
    assert (out / "report.tex").read_text().count(r"\begin{table}[ht]") == 2
