"""Seconds for `cifarctl report` over a store of many runs (issue 6: 500 runs in under 3 s).

    .venv/bin/python benchmarks/report.py                     # 500 runs, temporary store
    .venv/bin/python benchmarks/report.py --runs 2000 --store /tmp/bench-store --keep
    .venv/bin/python benchmarks/report.py --max-seconds 3     # exit 1 if slower (CI)

Builds a sqlite store of synthetic long-tailed runs as `cifarctl train` logs them
(`build_store`, `--epochs` points per metric), then times
1. `build_report` in-process (the median of `--repeat` calls: the query, grouping, tables),
2. rendering every table (rich, markdown, CSV, JSON),
3. `cifarctl report` as a fresh process (JSON, and the rich tables), which includes starting
   Python and importing pandas and rich: what a user waits for. Without --filter the sqlite
   store is read directly (`RunStore.select`'s `tracking.sqlite_reader`); with one, through
   MLflow (importing and opening MLflow alone takes ~3 s on a 2-core machine), timed too.
4. with `--server`: `cifarctl report --out DIR` against the sqlite file and against an MLflow
   server on the same store (`mlflow server`, as `cifarctl ui` starts it), which reads every
   run's curves and confusion matrix over HTTP (issue 20: within 2x of the sqlite path).
Prints a table and one JSON line.

    .venv/bin/python benchmarks/report.py --runs 300 --server
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOSSES = ("ce", "focal")
BETAS = (0.0, 0.9, 0.99, 0.999, 0.9999)
RATIOS = (1.0, 10.0, 50.0, 100.0, 200.0)


def synthetic_runs(n: int) -> list[dict]:
    """`n` configs x seeds: loss, beta, ratio, seed and per-class accuracies that fall with
    the class's count (a plausible long-tailed pattern, seeded)."""
    from cifarctl.data.longtail import long_tail_counts

    rng = random.Random(0)
    configs = [(loss, beta, ratio) for loss in LOSSES for beta in BETAS for ratio in RATIOS]
    out = []
    for k in range(n):
        loss, beta, ratio = configs[k % len(configs)]
        seed = k // len(configs)
        counts = long_tail_counts("exp", ratio)
        accs = [min(0.99, max(0.0, 0.55 + 0.08 * math.log10(c) + 0.1 * beta
                              + rng.gauss(0, 0.02))) for c in counts]
        out.append({"loss": loss, "beta": beta, "ratio": ratio, "seed": seed,
                    "counts": counts, "accs": accs})
    return out


def build_store(uri: str, n: int, epochs: int) -> float:
    """Write `n` runs into `uri`; returns the seconds it took.

    Three store writes a run: `start_run` (the run and its tags), one `log_batch` with the
    params and every metric point (history and summary; MLflow takes 100 params and 1000
    values a request, so longer histories take more), `finish`.
    """
    from mlflow.entities import Metric, Param

    from cifarctl.config import load_config
    from cifarctl.data.dataset import CIFAR10_CLASSES
    from cifarctl.tracking import call_with_retry
    from cifarctl.tracking.mlflow_tracker import start_run

    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    for run in synthetic_runs(n):
        cfg = load_config(None, {"loss.name": run["loss"], "loss.beta": run["beta"],
                                 "data.imbalance": run["ratio"], "run.seed": run["seed"],
                                 "optim.epochs": max(epochs, 1), "run.experiment": "bench"})
        tags = {"class_counts": ",".join(map(str, run["counts"])),
                "class_names": ",".join(CIFAR10_CLASSES), "dataset": "cifar10", "loss": run["loss"],
                "beta": f"{run['beta']:g}"}
        tracker = start_run(experiment="bench", tracking_uri=uri, tags=tags,
                            run_name=f"{run['loss']}-b{run['beta']}-lt{run['ratio']:g}"
                                     f"-s{run['seed']}")
        acc = sum(run["accs"]) / len(run["accs"])
        points = []
        for epoch in range(epochs):
            frac = (epoch + 1) / epochs
            values = {"train_loss": 2.0 * (1 - frac) + 0.1, "test_loss": 1.5 - frac,
                      "test_acc": acc * frac, "train_acc": min(1.0, acc * frac + 0.1),
                      "lr": 0.1, **{f"test_acc_class_{i}": a * frac
                                    for i, a in enumerate(run["accs"])}}
            points += [Metric(k, v, now, epoch) for k, v in values.items()]
        summary = {"test_acc_at_best": acc, "best_epoch": max(epochs - 1, 0),
                   "test_loss_at_best": 0.5,
                   **{f"test_acc_class_{i}_at_best": a for i, a in enumerate(run["accs"])}}
        points += [Metric(k, v, now, max(epochs - 1, 0)) for k, v in summary.items()]
        params = [Param(k, str(v)) for k, v in cfg.to_flat().items()]
        for start in range(0, len(points), 1000):  # the config's ~27 params go with the first
            call_with_retry(tracker.client.log_batch, tracker.run_id,
                            metrics=points[start:start + 1000], params=params if not start else [])
        tracker.finish("FINISHED")
    return time.perf_counter() - t0


def time_library(uri: str, repeat: int) -> tuple[float, float, int]:
    """Median seconds of build_report and of rendering every format; number of groups."""
    from rich.console import Console

    from cifarctl.report import render
    from cifarctl.report.build import build_report

    build_report(uri, experiments=["bench"])  # warm: sqlite page cache, imports
    builds, renders = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = build_report(uri, experiments=["bench"])
        t1 = time.perf_counter()
        render.print_rich(report, Console(file=io.StringIO(), width=200, color_system=None))
        render.markdown(report)
        render.csv_table(report)
        render.to_json(report)
        renders.append(time.perf_counter() - t1)
        builds.append(t1 - t0)
    return statistics.median(builds), statistics.median(renders), len(report.per_class)


def time_report(env: dict[str, str], *args: str, repeat: int = 1) -> float:
    """Median wall seconds of `cifarctl report --experiment bench ARGS` processes."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "cifarctl", "report", "--experiment",
                              "bench", *args], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            what = "report --out" if "--out" in args else "report"
            raise SystemExit(f"cifarctl {what} failed: {out.stderr.strip()}")
        if args[:2] == ("--format", "json"):
            json.loads(out.stdout)
    return statistics.median(times)


def time_out(uri: str, folder: Path, repeat: int) -> float:
    """Median wall seconds of `cifarctl report --out FOLDER --no-log` against `uri`."""
    return time_report({**os.environ, "COLUMNS": "120"}, "--out", str(folder), "--no-log",
                       "--tracking-uri", uri, repeat=repeat)


def time_histories(uri: str) -> tuple[float, float]:
    """Seconds to read every run's curves (`report`'s test_acc and test_loss histories) from
    `uri`: one request per run and metric, and `RunStore.metric_histories`."""
    from cifarctl.tracking.runstore import RunStore

    store = RunStore(uri)
    ids = [r.run_id for r in store.find_runs("bench")]
    keys = ("test_acc", "test_loss")
    t0 = time.perf_counter()
    one_by_one = {r: {k: store.metric_history(r, k) for k in keys} for r in ids}
    t1 = time.perf_counter()
    assert store.metric_histories(ids, keys) == one_by_one
    return t1 - t0, time.perf_counter() - t1


def time_server(uri: str, folder: Path, repeat: int) -> dict[str, float]:
    """`report --out` from the sqlite file and through an MLflow server on it, and the
    server's curve reads alone."""
    from cifarctl.ui import start_ui

    times = {"out_sqlite_s": time_out(uri, folder / "out-sqlite", repeat)}
    with start_ui(uri, port=0) as server:
        times["out_server_s"] = time_out(server.url, folder / "out-server", repeat)
        times["histories_each_s"], times["histories_bulk_s"] = time_histories(server.url)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10, help="per-epoch points per metric")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", type=Path, help="folder for the store (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep a temporary store")
    parser.add_argument("--server", action="store_true",
                        help="also time `report --out` through an MLflow server")
    parser.add_argument("--max-seconds", type=float,
                        help="exit 1 if build + render, or a `cifarctl report` process "
                             "(median, no filter), is slower")
    args = parser.parse_args()

    folder = args.store or Path(tempfile.mkdtemp(prefix="cifarctl-bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder.absolute() / 'mlflow.db'}"
    os.chdir(folder)  # artifacts (none here) and MLflow's defaults stay in the folder
    from cifarctl.report.runs import load_runs

    try:
        have = len(load_runs(uri, experiments=["bench"]).frame)
    except Exception:  # noqa: BLE001 - a new store has no experiment yet
        have = 0
    write_s = build_store(uri, args.runs, args.epochs) if have != args.runs else 0.0
    build_s, render_s, groups = time_library(uri, args.repeat)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "COLUMNS": "120"}
    cli_s = time_report(env, "--format", "json", repeat=args.repeat)
    table_s = time_report(env, "--format", "table", repeat=args.repeat)
    filter_s = time_report(env, "--format", "json", "--filter", "attributes.status = 'FINISHED'")
    rows = [("runs", "runs", args.runs), ("configurations", "groups", groups),
            ("store written (s)", None, write_s), ("build_report (s)", "build_report_s", build_s),
            ("render all formats (s)", "render_s", render_s),
            ("cifarctl report --format json (s)", "cli_json_s", cli_s),
            ("cifarctl report (rich tables) (s)", "cli_table_s", table_s),
            ("... with --filter (MLflow reader) (s)", "cli_filter_s", filter_s)]
    if args.server:
        t = time_server(uri, folder, args.repeat)
        rows += [("report --out, sqlite file (s)", "out_sqlite_s", t["out_sqlite_s"]),
                 ("report --out, MLflow server (s)", "out_server_s", t["out_server_s"]),
                 ("server / sqlite", None, t["out_server_s"] / t["out_sqlite_s"]),
                 ("curves over the server, per history (s)", "histories_each_s",
                  t["histories_each_s"]),
                 ("curves over the server, in bulk (s)", "histories_bulk_s", t["histories_bulk_s"])]
    for name, _, value in rows:
        print(f"{name:<40} {value:.3f}" if isinstance(value, float) else f"{name:<40} {value}")
    print(json.dumps({**{key: round(value, 3) if isinstance(value, float) else value
                         for _, key, value in rows if key}, "store": str(folder)}))
    if args.store is None and not args.keep:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    slowest = max(cli_s, table_s, build_s + render_s)
    if args.max_seconds is not None and slowest > args.max_seconds:
        raise SystemExit(f"cifarctl report took {slowest:.2f} s > {args.max_seconds} s")


if __name__ == "__main__":
    main()
