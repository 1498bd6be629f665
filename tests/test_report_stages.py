"""`cifarctl report` with the later baselines (issue 18): post-hoc columns, second stages
grouped by their first, and SPEC 4's published numbers with their sources.

A store written through the tracking interface, as `test_report.py` writes its own: CE,
VS and LA under SPEC 2's protocol (two seeds each, CE evaluated with `--logit-adjust 1`),
and cRT on each CE run (10 epochs: a second stage).
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_report import PROTOCOL, write_run
from typer.testing import CliRunner

from cifarctl.cli import app

ACC = {"ce": 0.70, "vs": 0.80, "la": 0.78, "crt": 0.76}
CRT = {"optim.train": "classifier", "model.reinit_classifier": True,
       "data.sampler": "class-balanced", "optim.epochs": 10}


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_template_db) -> dict:
    from cifarctl.tracking.runstore import open_store

    folder = tmp_path_factory.mktemp("report-stages")
    shutil.copyfile(_mlflow_template_db, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    ce = {}
    for seed in (0, 1):
        for loss in ("ce", "vs", "la"):
            run_id = write_run(uri, "modern", {**PROTOCOL, "loss.name": loss, "run.seed": seed},
                               [ACC[loss] + 0.01 * seed] * 10)
            if loss == "ce":
                ce[seed] = run_id
                open_store(uri).tracker(run_id).log_metrics(  # as `eval --logit-adjust 1`
                    {"eval_la1_test_acc": 0.77 + 0.01 * seed}, step=0)
        write_run(uri, "modern", {**PROTOCOL, **CRT, "run.init_from": ce[seed],
                                  "run.seed": seed}, [ACC["crt"] + 0.01 * seed] * 10,
                  tags={"init_from": ce[seed]})
    return {"uri": uri}


def build(store):
    from cifarctl.report.build import build_report

    return build_report(store["uri"], experiments=["modern"])


def test_second_stages_are_one_group_named_after_their_first(store):
    report = build(store)
    by_label = {r.label: r for r in report.per_class}
    crt = next(r for r in report.per_class if "init_from=CE" in r.label)
    assert crt.n == 2 and "train=classifier" in crt.label
    assert crt.overall.mean == pytest.approx(ACC["crt"] + 0.005)
    # keys added later at their default are not named; the epochs vary (200 and cRT's 10)
    assert {"CE, epochs=200", "VS γ=0.3, epochs=200", "LA, epochs=200"} <= set(by_label)
    (versus,) = [c for c in report.head_to_head if c.label == crt.label]
    assert versus.baseline == "CE, epochs=200"  # plain CE, not a second stage on CE
    assert versus.matched_seeds == ["0", "1"]


def test_post_hoc_accuracy_is_its_own_column(store):
    report = build(store)
    ce = next(r for r in report.per_class if r.label == "CE, epochs=200")
    assert ce.extras["eval_la1_test_acc"].mean == pytest.approx(0.775)
    result = CliRunner().invoke(app, ["report", "--tracking-uri", store["uri"], "-e", "modern",
                                      "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "eval_la1_test_acc_mean" in result.stdout.splitlines()[0]
    table = CliRunner().invoke(app, ["report", "--tracking-uri", store["uri"], "-e", "modern",
                                     "--format", "markdown"])
    assert "post-hoc LA τ=1" in table.stdout


def test_the_literature_table_has_spec_4s_rows_with_their_sources(store):
    report = build(store)
    rows = {(r.label.removesuffix(", epochs=200").replace(", epochs=200 ", " "), p.source,
             p.method): (r, p) for r in report.literature for p in r.published}
    wang_ce = rows["CE", "Wang et al. 2023", "CE, 200 epochs, wd 2e-4"][1]
    assert wang_ce.error == pytest.approx(28.75) and "wang22ti/DDC" in wang_ce.reference
    assert rows["CE", "Menon et al. 2021", "plain CE"][1].error == pytest.approx(28.64)
    assert rows["VS γ=0.3", "Wang et al. 2023", "VS loss, tuned weight decay"][1].error == \
        pytest.approx(18.38)
    assert rows["LA", "Menon et al. 2021", "logit-adjusted loss (τ=1)"][1].error == \
        pytest.approx(22.11)
    posthoc, menon = rows["CE + post-hoc τ=1", "Menon et al. 2021",
                          "post-hoc logit adjustment (τ=1)"]
    assert posthoc.error.mean == pytest.approx(22.5) and menon.error == pytest.approx(22.68)
    crt = next(r for r in report.literature if "init_from=CE" in r.label)
    assert crt.published == []  # plain cRT: neither CE's numbers nor MiSLAS's
    text = CliRunner().invoke(app, ["report", "--tracking-uri", store["uri"], "-e", "modern",
                                    "--format", "markdown"]).stdout
    assert "Wang et al. 2023, A Unified Generalization Analysis" in text


def test_mislas_is_beside_a_mixup_first_stage_retrained_with_label_aware_smoothing(
        tmp_path, _mlflow_template_db):
    """Zhong et al.'s number goes beside their pipeline alone: mixup in the first stage
    (which the protocol check would otherwise call a gap), label-aware smoothing in the
    second. Plain cRT, or label-aware smoothing on a first stage without mixup, gets none."""
    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    las = {"loss.smoothing": "label-aware"}
    for seed in (0, 1):
        mixup = write_run(uri, "mislas", {**PROTOCOL, "data.mixup_alpha": 1.0,
                                          "run.seed": seed}, [0.70] * 10)
        plain = write_run(uri, "mislas", {**PROTOCOL, "run.seed": seed}, [0.65] * 10)
        for first, stage2, acc in ((mixup, las, 0.80), (plain, las, 0.75), (plain, {}, 0.72)):
            write_run(uri, "mislas", {**PROTOCOL, **CRT, **stage2, "run.init_from": first,
                                      "run.seed": seed}, [acc] * 10, tags={"init_from": first})
    doc = json.loads(CliRunner().invoke(app, ["report", "--tracking-uri", uri, "-e", "mislas",
                                              "--format", "json"]).stdout)
    beside = {r["config"]: [p["source"] for p in r["published"]] for r in doc["literature"]}
    assert [c for c, sources in beside.items() if "Zhong et al. 2021" in sources] == \
        [next(c for c in beside if "label-aware" in c and "mixup" in c)]
    mislas = next(p for r in doc["literature"] for p in r["published"]
                  if p["source"] == "Zhong et al. 2021")
    assert mislas["test_selected"] and mislas["error_percent"] == pytest.approx(17.5)
    text = CliRunner().invoke(app, ["report", "--tracking-uri", uri, "-e", "mislas",
                                    "--format", "markdown"]).stdout
    assert "Zhong et al. 2021 †" in text and "best test accuracy: optimistic" in text



def test_the_closest_note_says_a_second_stage_is_judged_by_its_first(tmp_path,
                                                                     _mlflow_template_db):
    """Off the protocol (20 epochs), a cRT group is nearest by its stage-1 run's settings: the
    note says so, rather than listing settings its own label contradicts."""
    from cifarctl.report.build import build_report

    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    short = {**PROTOCOL, "optim.epochs": 20}
    ce = write_run(uri, "short", {**short, "loss.name": "ce"}, [0.5] * 3)
    write_run(uri, "short", {**short, **CRT, "run.init_from": ce}, [0.6] * 3,
              tags={"init_from": ce})
    (note,) = [n for n in build_report(uri, experiments=["short"]).notes if "closest" in n]
    assert note.endswith("; closest: CE, sampler=class-balanced, reinit_classifier=True, "
                         "epochs=10, train=classifier, init_from=CE, judged by its stage-1 run "
                         "(optim.epochs=20 (protocol: 200))")


def test_second_stages_pair_with_the_baseline_by_their_first_stages_seed(tmp_path,
                                                                         _mlflow_template_db):
    """`train --init-from` without `--seed` gives every cRT run seed 0: paired by that, all
    three were averaged against CE seed 0 alone (n=1, and the wrong sign here)."""
    from cifarctl.report.build import build_report

    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ce_acc = {0: 0.40, 1: 0.20, 2: 0.10}
    gains = {0: 0.01, 1: 0.02, 2: 0.02}  # each cRT beats its own first stage
    for seed, acc in ce_acc.items():
        ce = write_run(uri, "crt", {**PROTOCOL, "run.seed": seed}, [acc] * 10)
        write_run(uri, "crt", {**PROTOCOL, **CRT, "run.init_from": ce, "run.seed": 0},
                  [acc + gains[seed]] * 10, tags={"init_from": ce})
    report = build_report(uri, experiments=["crt"])
    (crt,) = [c for c in report.head_to_head if "init_from=CE" in c.label]
    assert sorted(crt.matched_seeds) == ["0", "1", "2"]
    assert crt.overall.kind == "paired" and crt.overall.df == 2
    assert crt.overall.diff == pytest.approx(sum(gains.values()) / 3)
    (row,) = [r for r in report.per_class if "init_from=CE" in r.label]
    assert sorted(row.seeds) == ["0", "1", "2"] and row.n == 3


def test_a_loss_param_the_loss_does_not_read_splits_no_configuration(tmp_path,
                                                                     _mlflow_template_db):
    """`la` reads no gamma and balanced softmax no tau: runs differing only there are seeds
    of one row (they were two rows of one seed each), and CE stays the baseline."""
    from cifarctl.report.build import build_report

    shutil.copyfile(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed, (gamma, tau) in enumerate(((1.0, 1.0), (2.0, 2.0))):
        write_run(uri, "ignored", {**PROTOCOL, "loss.name": "ce", "run.seed": seed},
                  [0.6] * 10)
        write_run(uri, "ignored", {**PROTOCOL, "loss.name": "la", "loss.gamma": gamma,
                                   "run.seed": seed}, [0.7] * 10)
        write_run(uri, "ignored", {**PROTOCOL, "loss.name": "balanced-softmax",
                                   "loss.tau": tau, "run.seed": seed}, [0.65] * 10)
        write_run(uri, "ignored", {**PROTOCOL, "loss.name": "focal", "loss.gamma": gamma,
                                   "run.seed": seed}, [0.62] * 10)
    report = build_report(uri, experiments=["ignored"])
    rows = {r.label.split(" (")[0]: r.n for r in report.per_class}
    assert {rows[k] for k in rows if k.startswith(("LA", "balanced softmax"))} == {2}
    assert sum(1 for r in report.per_class if r.label.startswith("focal")) == 2  # it reads γ
    assert {c.baseline for c in report.head_to_head} == {"CE"}
    assert {c.label.split(",")[0] for c in report.head_to_head if c.overall.df == 1} >= {
        "LA", "balanced softmax"}
