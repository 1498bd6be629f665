"""What starting its workers costs a sweep: forked from a fork server (now) or spawned (before).

    .venv/bin/python benchmarks/sweep_start.py --trials 6 --workers 2 --repeat 3

Runs the same sweep of `--trials` short trials (vanillacnn, one epoch of 20 synthetic images a
class, so the training itself takes about a second) as `cifarctl sweep` subprocesses, each in
a fresh store: with the default start (`forkserver`) and with `CIFARCTL_WORKER_START=spawn`,
alternating, `--repeat` times. Prints the median wall seconds of each and their ratio. The
difference is the workers' imports of torch and MLflow, paid once by the fork server instead
of once per group.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emit import emit

WAYS = {"now": "forkserver", "reference": "spawn"}


def write_spec(folder: Path, trials: int) -> Path:
    from cifarctl.data.synth import SynthSpec, write_batches

    data = folder / "data"
    write_batches(data, SynthSpec(train_per_class=20, test_per_class=5, seed=0))
    doc = {"base": {"model": {"name": "vanillacnn"}, "data": {"dataset": str(data)},
                    "optim": {"epochs": 1, "batch_size": 50, "warmup": 0, "steps": []},
                    "run": {"device": "cpu"}},
           "grid": {"seed": list(range(trials))}}
    spec = folder / "start.yaml"
    spec.write_text(json.dumps(doc))
    return spec


def one_sweep(spec: Path, folder: Path, workers: int, method: str) -> float:
    """Wall seconds of one whole `cifarctl sweep` of `spec` into a fresh store in `folder`."""
    folder.mkdir()
    env = {**os.environ, "CIFARCTL_WORKER_START": method, "CIFARCTL_DATA": str(folder / "cache")}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cifarctl", "sweep", str(spec), "--workers",
                    str(workers), "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
                    "--checkpoints", str(folder / "checkpoints"), "--quiet"],
                   check=True, env=env, cwd=folder, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_spec(Path(tmp), args.trials)
        for r in range(args.repeat):
            order = list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]
            for way in order:
                times[way].append(one_sweep(spec, Path(tmp) / f"{way}{r}", args.workers,
                                            WAYS[way]))
    now, ref = (statistics.median(times[w]) for w in ("now", "reference"))
    result = {"trials": args.trials, "workers": args.workers, "repeat": args.repeat,
              "now_start": WAYS["now"], "now_s": round(now, 2), "reference_s": round(ref, 2),
              "reference_over_now": round(ref / now, 3),
              "runs_s": {w: [round(t, 2) for t in ts] for w, ts in times.items()}}
    emit(result, args.json)
    return result


if __name__ == "__main__":
    main()
