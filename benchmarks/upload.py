"""What uploading each epoch's checkpoint to a tracking server costs training (issue 20).

    .venv/bin/python benchmarks/upload.py                       # resnet32, 3 epochs, synthetic
    .venv/bin/python benchmarks/upload.py --model vanillacnn --epochs 5

Starts `cifarctl server` on a temporary sqlite store (`--serve-artifacts`: artifacts go over
HTTP, as on a cluster), then trains the same config twice through it: once with checkpoints
following the run (`last.pt` / `best.pt` uploaded in the background each epoch, metrics
logged after the upload), once without (checkpoints uploaded only at the end, as before).
Prints per-epoch wall time of both, how long the uploads took (off the training thread when
following), the checkpoint's size, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def train_once(url: str, cfg, root: Path, follow: bool) -> dict:
    """Train `cfg` in a new run on `url`: per-epoch seconds, and how long its checkpoint
    uploads took (in the background when following)."""
    from cifarctl.progress import NullReporter
    from cifarctl.tracking import open_tracker
    from cifarctl.training import train

    tracker = open_tracker(True, experiment="upload-bench", tracking_uri=url)
    tracker.checkpoints_follow = follow
    uploads: list[float] = []
    log_artifact = tracker.log_artifact

    def timed(path, artifact_path=None):
        t = time.perf_counter()
        log_artifact(path, artifact_path)
        uploads.append(time.perf_counter() - t)

    tracker.log_artifact = timed
    ends: list[float] = []

    class Clock(NullReporter):
        def epoch_ended(self, epoch, epochs, metrics):
            ends.append(time.perf_counter())

    t0 = time.perf_counter()
    outcome = train(cfg, tracker=tracker, reporter=Clock(), checkpoint_root=root)
    total = time.perf_counter() - t0
    return {"status": outcome.status, "epoch_s": [b - a for a, b in zip([t0, *ends], ends)],
            "total_s": total, "upload_s": sum(uploads), "uploads": len(uploads),
            "checkpoint_mb": (root / outcome.run_id / "last.pt").stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=200, help="training images per class")
    args = parser.parse_args()

    from cifarctl.config import load_config
    from cifarctl.data.synth import SynthSpec, write_batches
    from cifarctl.server import start_server

    folder = Path(tempfile.mkdtemp(prefix="cifarctl-bench-upload-"))
    write_batches(folder / "data", SynthSpec(train_per_class=args.per_class, test_per_class=20))
    cfg = load_config(None, {"model.name": args.model, "data.dataset": str(folder / "data"),
                             "optim.epochs": args.epochs, "optim.warmup": 0, "optim.steps": [],
                             "run.device": "cpu", "data.val_per_class": 10})
    with start_server(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", port=0,
                      workers=1) as server:
        runs = {name: train_once(server.url, cfg, folder / name, follow)
                for name, follow in (("without", False), ("following", True))}
    for name, r in runs.items():
        print(f"{name:<10} epochs (s): {' '.join(f'{e:.2f}' for e in r['epoch_s'])}  "
              f"total {r['total_s']:.2f} s; {r['uploads']} uploads, {r['upload_s']:.2f} s")
    mb = runs["following"]["checkpoint_mb"]
    extra = (statistics.median(runs["following"]["epoch_s"][1:] or [0])
             - statistics.median(runs["without"]["epoch_s"][1:] or [0]))
    print(f"checkpoint {mb:.2f} MiB; median epoch (after the first) +{extra:.3f} s following")
    print(json.dumps({"model": args.model, "checkpoint_mb": round(mb, 2),
                      **{f"{n}_{k}": (round(v, 3) if isinstance(v, float) else v if
                                      isinstance(v, int) else [round(x, 3) for x in v])
                         for n, r in runs.items() for k, v in r.items() if k != "status"}}))


if __name__ == "__main__":
    main()
