"""The report's pure parts against hand computation: statistics, labels, literature, shot
groups and ECE (issue 6). No store, no torch: milliseconds."""

from __future__ import annotations

import math

import pytest

from cifarctl.evaluation.scores import expected_calibration_error, group_accuracies, shot_groups
from cifarctl.report import literature, stats
from cifarctl.report.groups import config_label, unique_labels
from cifarctl.report.literature import PROTOCOL, protocol_gaps

# Student t 0.975 quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.4.2.7.1)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 10: 2.228, 29: 2.045,
        30: 2.042, 60: 2.000, 120: 1.980}


@pytest.mark.parametrize("df, expected", sorted(T975.items()))
def test_t_quantile_matches_printed_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_symmetry_and_normal_limit():
    assert stats.t_quantile(0.025, 7) == pytest.approx(-stats.t_quantile(0.975, 7), rel=1e-12)
    assert stats.t_quantile(0.5, 3) == 0.0
    assert stats.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-5)  # normal quantile
    assert stats.t_quantile(0.95, 1) == pytest.approx(math.tan(math.pi * 0.45), rel=1e-9)


def t_density(x: float, df: float) -> float:
    """Student's t density, written out (Student 1908; any textbook)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def integrated_cdf(t: float, df: float, steps: int = 4000) -> float:
    """P(T <= t) = 1/2 + the density integrated from 0 to t (composite Simpson's rule, error
    ~1e-12 here): a reference for real df, where no closed form helps."""
    h = abs(t) / steps
    inner = sum((4 if k % 2 else 2) * t_density(k * h, df) for k in range(1, steps))
    area = h / 3 * (t_density(0.0, df) + inner + t_density(abs(t), df))
    return 0.5 + math.copysign(area, t)


def test_two_sided_p_closed_forms():
    for t in (-3.0, -0.4, 0.0, 0.7, 2.5, 40.0):
        # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
        assert stats.two_sided_p(t, 1) == pytest.approx(1 - 2 * math.atan(abs(t)) / math.pi,
                                                        abs=1e-12)
        assert stats.two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t),
                                                        abs=1e-12)
    # far in the tail the p-value keeps its digits: 1 - 2 atan(t) / pi = 2 atan(1 / t) / pi
    assert stats.two_sided_p(1e4, 1) == pytest.approx(2 * math.atan(1e-4) / math.pi, rel=1e-12)
    with pytest.raises(ValueError):
        stats.two_sided_p(1.0, 0)


@pytest.mark.parametrize("df", [1.7, 3.0, 5.37, 12.25])
def test_real_df_quantile_and_p_match_the_integrated_density(df):
    """Welch's df are real numbers: the quantile and p-value there against the density."""
    q = stats.t_quantile(0.975, df)
    assert integrated_cdf(q, df) == pytest.approx(0.975, abs=1e-9)
    for t in (-2.2, 0.3, 1.9):
        assert stats.two_sided_p(t, df) == pytest.approx(2 * integrated_cdf(-abs(t), df),
                                                         abs=1e-9)
    # df = 2 inverts in closed form: t = u sqrt(2 / (1 - u^2)) with u = 2p - 1
    assert stats.t_quantile(0.9, 2) == pytest.approx(0.8 * math.sqrt(2 / (1 - 0.64)), rel=1e-12)
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, df)


def test_summary_by_hand():
    s = stats.summarize([0.68, 0.70, 0.72])
    assert s.mean == pytest.approx(0.70) and s.std == pytest.approx(0.02) and s.n == 3
    assert s.ci95 == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    one = stats.summarize([0.65])
    assert one.mean == 0.65 and one.ci95 is None and one.n == 1 and math.isnan(one.std)
    assert stats.summarize([0.5, math.nan, 0.7]).n == 2  # a run without the metric drops out
    assert stats.summarize([]).n == 0


def test_paired_t_test_by_hand():
    a, b = [0.71, 0.74, 0.72, 0.75], [0.70, 0.71, 0.71, 0.72]
    d = [0.01, 0.03, 0.01, 0.03]
    mean, sd = 0.02, math.sqrt(sum((x - 0.02) ** 2 for x in d) / 3)
    test = stats.paired_t_test(a, b)
    assert test.kind == "paired" and test.n == 4 and test.df == 3
    assert test.diff == pytest.approx(mean)
    assert test.t == pytest.approx(mean / (sd / 2))
    assert test.ci95 == pytest.approx(3.182446 * sd / 2, rel=1e-6)
    # df = 3: P(|T| > t) = 1 - (2/pi) (atan(u) + u / (1 + u^2)), u = t / sqrt(3)
    u = test.t / math.sqrt(3)
    assert test.p == pytest.approx(1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u)), rel=1e-9)


def test_paired_t_test_edge_cases():
    single = stats.paired_t_test([0.8], [0.7])
    assert single.p is None and single.ci95 is None and single.diff == pytest.approx(0.1)
    constant = stats.paired_t_test([1.0, 0.5], [0.75, 0.25])  # identical differences
    assert constant.p == 0.0 and constant.ci95 == 0.0
    with pytest.raises(ValueError):
        stats.paired_t_test([1.0, 2.0], [1.0])


def test_welch_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0, 5.0, 6.5]
    va, vb = stats.sample_std(a) ** 2 / 4, stats.sample_std(b) ** 2 / 5
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4)
    test = stats.welch_t_test(a, b)
    assert test.kind == "welch" and test.df == pytest.approx(df)
    assert test.t == pytest.approx((2.5 - 4.1) / math.sqrt(va + vb))
    assert test.p == pytest.approx(2 * integrated_cdf(-abs(test.t), df), abs=1e-9)
    assert integrated_cdf(test.ci95 / math.sqrt(va + vb), df) == pytest.approx(0.975, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_the_tests_agree_with_scipy_stats(seed):
    """`stats` calls scipy.special directly (scipy.stats costs ~0.7 s of import per report):
    the same numbers as scipy.stats' own paired and Welch tests and t quantiles."""
    import random

    from scipy import stats as scipy_stats

    rng = random.Random(seed)
    a = [rng.gauss(0.75, 0.02) for _ in range(3 + seed)]
    b = [x - rng.gauss(0.01, 0.02) for x in a]
    c = [rng.gauss(0.73, 0.05) for _ in range(4 + 2 * seed)]
    paired, ref = stats.paired_t_test(a, b), scipy_stats.ttest_rel(a, b)
    assert (paired.t, paired.p, paired.df) == pytest.approx((ref.statistic, ref.pvalue, ref.df))
    welch, ref = stats.welch_t_test(a, c), scipy_stats.ttest_ind(a, c, equal_var=False)
    assert (welch.t, welch.p, welch.df) == pytest.approx((ref.statistic, ref.pvalue, ref.df))
    assert welch.ci95 == pytest.approx(
        float(ref.confidence_interval(0.95).high) - (stats.mean(a) - stats.mean(c)))
    assert stats.t_quantile(0.975, paired.df) == pytest.approx(
        scipy_stats.t.ppf(0.975, paired.df), rel=1e-12)


def test_verdicts_read_plainly():
    noise = stats.TTest("paired", 0.004, 0.012, 1.0, 2, 0.41, 3)
    assert stats.verdict(noise) == "within noise (p=0.41, n=3)"
    better = stats.TTest("paired", 0.021, 0.013, 6.0, 2, 0.02, 3)
    assert stats.verdict(better) == "better by 2.1 ± 1.3 points (p=0.02, n=3)"
    worse = stats.TTest("paired", -0.05, 0.01, -9.0, 4, 0.0004, 5)
    assert stats.verdict(worse) == "worse by 5.0 ± 1.0 points (p<0.001, n=5)"
    single = stats.paired_t_test([0.64], [0.68])
    assert stats.verdict(single) == "worse by 4.0 points; a single pair, no test (n=1)"
    welch = stats.TTest("welch", 0.03, 0.02, 3.0, 5.5, 0.03, 3)
    assert stats.verdict(welch) == "better by 3.0 ± 2.0 points (p=0.03, unpaired, n=3)"
    assert stats.format_p(0.0493) == "p=0.049" and stats.format_p(0.00049) == "p<0.001"


def test_labels_read_like_the_write_up():
    ce = {"loss.name": "ce", "loss.beta": "0.0", "loss.gamma": "1.0", "loss.drw_epoch": "None",
          "data.imbalance": "100.0", "data.imbalance_type": "exp"}
    cb = {**ce, "loss.name": "focal", "loss.beta": "0.999"}
    focal2 = {**ce, "loss.name": "focal", "loss.gamma": "2.0"}
    drw = {**ce, "loss.name": "ldam", "loss.beta": "0.9999", "loss.drw_epoch": "160"}
    assert unique_labels([ce, cb, drw]) == ["CE", "CB-focal β=0.999", "LDAM-DRW"]
    # γ is named on every focal configuration once focal ones differ in it
    assert unique_labels([ce, cb, focal2]) == ["CE", "CB-focal β=0.999 γ=1", "focal γ=2"]
    assert unique_labels([drw, {**drw, "loss.drw_epoch": "100"}]) == [
        "LDAM-DRW from epoch 160", "LDAM-DRW from epoch 100"]
    lt10 = {**ce, "data.imbalance": "10.0"}
    assert unique_labels([ce, lt10]) == ["CE, LT-100", "CE, LT-10"]
    step = {**ce, "data.imbalance_type": "step"}
    assert unique_labels([ce, step]) == ["CE, LT-100", "CE, step-100"]
    lr = {**ce, "optim.lr": "0.01"}
    assert config_label(lr, {"optim.lr"}) == "CE, lr=0.01"
    # grouped by beta alone (--by loss.beta): plain key=value names
    assert unique_labels([{"loss.beta": "0.9"}, {"loss.beta": "0.99"}]) == ["beta=0.9",
                                                                           "beta=0.99"]
    # gamma does nothing for CE: two CE groups that differ only in it still get distinct names
    assert unique_labels([ce, {**ce, "loss.gamma": "2.0"}]) == [
        "CE (loss.gamma=1.0)", "CE (loss.gamma=2.0)"]


def published_for(*, loss: str, beta: float, gamma: float, drw: bool, profile: str,
                  ratio: float) -> list[literature.Published]:
    """SPEC 2's rows beside a configuration given by its logged loss params."""
    params = {"loss.name": loss, "loss.beta": str(beta), "loss.gamma": str(gamma),
              "loss.drw_epoch": "160" if drw else "None"}
    return [p for p in literature.published_for(literature.config_keys(params), profile, ratio)
            if p.kind == "protocol"]


def test_protocol_and_published_numbers():
    params = {k: str(v) for k, v in PROTOCOL.items()}
    params.update({"optim.steps": "[160, 180]", "optim.decay": "[0.01, 0.01]",
                   "optim.weight_decay": "0.0002", "data.augment": "True"})
    assert protocol_gaps(params) == []
    assert protocol_gaps({**params, "optim.epochs": "50"}) == [
        "optim.epochs=50 (protocol: 200)"]
    ldam = {**params, "loss.name": "ldam"}
    assert protocol_gaps({**ldam, "model.classifier": "auto"}) == []
    assert protocol_gaps({**ldam, "model.classifier": "normed"}) == []
    assert protocol_gaps({**ldam, "model.classifier": "linear"}) == [
        "model.classifier=linear (protocol for LDAM: normed)"]
    assert protocol_gaps(ldam) == [  # logged before the key existed: a linear head
        "model.classifier=linear (protocol for LDAM: normed)"]
    ce = published_for(loss="ce", beta=0.0, gamma=1.0, drw=False, profile="exp", ratio=100)
    assert {(p.source, p.error) for p in ce} == {("Cui et al. 2019", 29.64),
                                                 ("Cao et al. 2019", 29.64)}
    step = published_for(loss="ce", beta=0.0, gamma=1.0, drw=False, profile="step", ratio=10)
    assert [(p.method, p.error) for p in step] == [("ERM", 17.50)]
    drw = published_for(loss="ldam", beta=0.9999, gamma=1.0, drw=True, profile="exp",
                        ratio=100)
    assert [(p.method, p.error) for p in drw] == [("LDAM-DRW", 22.97)]
    cb = published_for(loss="focal", beta=0.9999, gamma=1.0, drw=False, profile="exp",
                       ratio=200)
    assert [(p.source, p.error) for p in cb] == [("Cui et al. 2019", 31.11)]
    assert published_for(loss="focal", beta=0.999, gamma=2.0, drw=False, profile="exp",
                         ratio=100) == []  # the write-up's beta: no published number
    balanced = published_for(loss="ce", beta=0.0, gamma=1.0, drw=False, profile="step", ratio=1)
    assert [p.error for p in balanced] == [6.61]
    # cui2019-table2.yaml runs Cui et al.'s focal baseline in its sigmoid form (their Sec. 4)
    for loss in ("focal", "sigmoid-focal"):
        focal = published_for(loss=loss, beta=0.0, gamma=1.0, drw=False, profile="exp",
                              ratio=100)
        assert [(p.method, p.error) for p in focal] == [("focal γ=1", 29.62)], loss
    cb_sigmoid = published_for(loss="sigmoid-focal", beta=0.9999, gamma=1.0, drw=False,
                               profile="exp", ratio=100)
    assert {p.error for p in cb_sigmoid} == {25.43}


def test_a_loss_that_reduces_to_another_is_compared_as_that_loss():
    def rows(**params: str) -> set[str]:
        return {p.method for p in literature.published_for(
            literature.config_keys({"loss.beta": "0.0", "loss.gamma": "1.0", **params}),
            "exp", 100.0)}

    ce = rows(**{"loss.name": "ce"})
    assert "softmax CE" in ce
    assert rows(**{"loss.name": "la", "loss.tau": "1.0"}) == {"logit-adjusted loss (τ=1)"}
    assert rows(**{"loss.name": "la"}) == {"logit-adjusted loss (τ=1)"}  # logged before tau
    assert rows(**{"loss.name": "la", "loss.tau": "0.0"}) == ce  # no adjustment: plain CE
    assert rows(**{"loss.name": "la", "loss.tau": "2.0"}) == set()
    assert rows(**{"loss.name": "vs", "loss.gamma": "0.3"}) == {"VS loss, tuned weight decay"}
    # Delta_c = 1: the logit-adjusted loss (tau 1), or CE (tau 0)
    assert rows(**{"loss.name": "vs", "loss.gamma": "0.0"}) == {"logit-adjusted loss (τ=1)"}
    assert rows(**{"loss.name": "vs", "loss.gamma": "0.0", "loss.tau": "0.0"}) == ce
    # DRW with beta 0 re-weights nothing: plain LDAM; only Cao et al.'s beta is LDAM-DRW
    assert rows(**{"loss.name": "ldam", "loss.drw_epoch": "160"}) == {"LDAM"}
    assert rows(**{"loss.name": "ldam", "loss.drw_epoch": "160", "loss.beta": "0.999"}) == set()
    assert "LDAM-DRW" in rows(**{"loss.name": "ldam", "loss.drw_epoch": "160",
                                 "loss.beta": "0.9999"})


def test_shot_groups_follow_liu_et_al():
    lt100 = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert shot_groups(lt100) == {"many": list(range(8)), "medium": [8, 9], "few": []}
    assert shot_groups([101, 100, 20, 19]) == {"many": [0], "medium": [1, 2], "few": [3]}
    accs = [0.9, 0.8, 0.5, 0.2]
    assert group_accuracies(accs, [101, 100, 20, 19]) == {
        "many": 0.9, "medium": pytest.approx(0.65), "few": 0.2}
    assert group_accuracies(accs, [500] * 4)["few"] is None


def test_ece_by_hand():
    # two bins: 10 examples at confidence 0.9 with 6 right, 5 at 0.5 with 4 right
    bins = [(10, 9.0, 6), (5, 2.5, 4), (0, 0.0, 0)]
    assert expected_calibration_error(bins) == pytest.approx((10 * 0.3 + 5 * 0.3) / 15)
    assert math.isnan(expected_calibration_error([(0, 0, 0)]))


def _protocol_runs(heads: list[tuple[str, str | None]]):
    """A report frame of protocol-following LT-100 runs, one per (loss, logged head)."""
    import pandas as pd

    params = {f"params.{k}": str(v) for k, v in PROTOCOL.items()}
    params.update({"params.optim.weight_decay": "0.0002", "params.data.imbalance": "100.0",
                   "params.data.imbalance_type": "exp", "params.loss.beta": "0.0",
                   "params.loss.gamma": "1.0", "params.loss.drw_epoch": "None"})
    rows = []
    for i, (loss, head) in enumerate(heads):
        row = {**params, "run_id": f"r{i}", "params.loss.name": loss,
               "params.run.seed": str(i % 2), "metrics.test_acc_at_best": 0.7}
        if head is not None:
            row["params.model.classifier"] = head
        rows.append(row)
    return pd.DataFrame(rows)


def test_runs_group_by_the_head_they_trained():
    """`auto` is what it resolved to and a run logged before the key had a linear head, so
    old and new CE runs pool and LDAM's `auto` and `normed` are one configuration; the head
    is named only where one loss was trained with two."""
    from cifarctl.report.groups import default_columns, make_groups
    from cifarctl.report.runs import resolve_heads
    from cifarctl.report.tables import literature_table

    common = resolve_heads(_protocol_runs([("ce", None), ("ce", "auto"), ("ldam", "auto"),
                                           ("ldam", "normed")]))
    assert list(common["params.model.classifier"]) == ["linear", "linear", "normed", "normed"]
    groups = make_groups(common, default_columns(common))
    assert [(g.label, list(g.rows.run_id)) for g in groups] == [
        ("CE", ["r0", "r1"]), ("LDAM", ["r2", "r3"])]

    mixed = resolve_heads(_protocol_runs([("ldam", "linear"), ("ldam", None), ("ldam", "auto"),
                                          ("ldam", "normed")]))
    groups = make_groups(mixed, default_columns(mixed))
    assert [g.label for g in groups] == ["LDAM, classifier=linear", "LDAM, classifier=normed"]
    rows, _ = literature_table(groups)  # Cao et al.'s LDAM number only beside the cosine head
    assert [(r.label, [p.method for p in r.published]) for r in rows] == [
        ("LDAM, classifier=normed", ["LDAM"])]


def test_means_and_stds_are_rounded_once_from_exact_sums():
    """Equal seeds give their value and no spread, not float-sum noise (0.10000000000000002,
    ci 4e-17) in the CSV; any list matches an exact-rational reference computed apart."""
    import random
    import statistics
    from fractions import Fraction

    summary = stats.summarize([0.1, 0.1, 0.1])
    assert (summary.mean, summary.std, summary.ci95) == (0.1, 0.0, 0.0)
    rng = random.Random(7)
    for _ in range(200):
        values = [rng.random() for _ in range(rng.randint(2, 9))]
        exact = [Fraction(v) for v in values]
        assert stats.mean(values) == float(statistics.mean(exact))
        variance = statistics.variance(exact)  # exact with Fractions, n - 1 denominator
        assert stats.sample_std(values) == math.sqrt(variance)
    assert math.isnan(stats.mean([])) and math.isnan(stats.sample_std([0.5]))
    assert math.isnan(stats.mean([0.5, math.nan]))
