"""Training images/s: the reference repositories' loop vs cifarctl's engine vs fused training.

    .venv/bin/python benchmarks/throughput.py                        # CPU, short
    .venv/bin/python benchmarks/throughput.py --device cuda --ks 1,2,4,8,16 --compile

One model (resnet32, batch 128), one dataset (the synthetic set unless `--dataset`), one
process, several ways to train it (issue 8):
  (a) reference: how the reference code behind SPEC 2 trains (kaidic/LDAM-DRW `cifar_train.py`,
      the CS7643 assignment): `loader.PilCifar` through a DataLoader (`--workers` processes),
      float32, eager, `nn.CrossEntropyLoss`, `torch.optim.SGD`, and `loss.item()` plus an
      accuracy `.item()` every step (their AverageMeters);
  (b) cifarctl: `cifarctl.engine.train_steps` on a `DeviceLoader`, the model, loss and
      optimizer built as `cifarctl train` builds them (channels_last; bf16 autocast on CUDA);
  (c) fused K: K such runs (seeds 0..K-1) as one fused model (`cifarctl.fused`), images/s
      summed over the members;
  (d) with `--only ...,d`: (b) with sharpness-aware minimisation (`cifarctl.sam`, `--sam-rho`):
      two forward and backward passes a step, so about half (b)'s rate (issue 19).
Warm-up, the timed windows (median), the table and JSON line, and `--interleave`'s rounds and
paired ratios: BENCHMARKS.md, "Training throughput".
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from emit import emit  # noqa: E402 - benchmarks/emit.py
from loader import PilCifar  # noqa: E402 - the torchvision-style Dataset of benchmarks/loader.py


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(run_steps: Callable[[int], None], *, warmup: int, windows: int, steps: int,
                  device: torch.device) -> list[float]:
    """Seconds per window of `steps` steps, after `warmup` untimed steps."""
    if warmup:
        run_steps(warmup)
    sync(device)
    times = []
    for _ in range(windows):
        start = time.perf_counter()
        run_steps(steps)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def endless(batches_of_epoch: Callable[[int], Iterator]) -> Iterator:
    """Batches of epoch 0, 1, 2, ... without end."""
    for epoch in itertools.count():
        yield from batches_of_epoch(epoch)


# ---- (a) the reference loop --------------------------------------------------------------

def reference(data: Any, args: argparse.Namespace, device: torch.device) -> Callable[[int], None]:
    """The reference repositories' training step, fed by a PIL Dataset through a DataLoader."""
    from cifarctl.models import create_model

    torch.manual_seed(0)
    model = create_model(args.model).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    loader = torch.utils.data.DataLoader(
        PilCifar(data.train_images, data.train_labels), batch_size=args.batch_size,
        shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0, pin_memory=device.type == "cuda")
    batches = endless(lambda epoch: iter(loader))
    meters = {"loss": 0.0, "correct": 0}  # their AverageMeters

    def run_steps(n: int) -> None:
        model.train()
        for x, y in itertools.islice(batches, n):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            output = model(x)
            loss = criterion(output, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            meters["loss"] += loss.item() * x.size(0)        # a host sync every step
            meters["correct"] += (output.argmax(1) == y).sum().item()

    return run_steps


# ---- (b) and (c): cifarctl -----------------------------------------------------------------

def cifarctl_run(data: Any, args: argparse.Namespace, device: torch.device,
                 members: int | None, sam_rho: float = 0.0) -> Callable[[int], None]:
    """`train_steps` on one model (`members` None) or a fused group of `members` models;
    with `sam_rho`, every step is SAM's two passes (`cifarctl.sam`)."""
    from cifarctl.data.loader import DeviceLoader
    from cifarctl.engine import TrainSums, train_steps
    from cifarctl.fused.data import FusedBatches
    from cifarctl.fused.engine import FusedLoss
    from cifarctl.fused.models import FusedModel
    from cifarctl.fused.optim import FusedSGD
    from cifarctl.losses import build_loss
    from cifarctl.models import create_model
    from cifarctl.optim import build_optimizer
    from cifarctl.sam import Sam
    from cifarctl.training import fast_layout

    counts = torch.bincount(torch.as_tensor(data.train_labels)).tolist()
    every = DeviceLoader(data.train_images, data.train_labels, batch_size=args.batch_size,
                         device=device)
    seeds = range(members or 1)
    loaders = [every.subset(torch.arange(every.num_samples), batch_size=args.batch_size,
                            shuffle=True, augment=True, drop_last=True, seed=s) for s in seeds]
    models, optimizers, losses = [], [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = create_model(args.model).to(device)
        models.append(model)
        optimizers.append(build_optimizer(model, lr=0.1, momentum=0.9, weight_decay=2e-4))
        losses.append(build_loss("ce", counts).to(device))
    if members is None:
        model, optimizer, loss_fn, source = models[0], optimizers[0], losses[0], loaders[0]
    else:
        model = FusedModel(models)
        optimizer = FusedSGD(model, list(zip(models, optimizers)))
        loss_fn, source = FusedLoss(losses), FusedBatches(loaders)
    model = fast_layout(model, device)  # as training.train does
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    sam = Sam(model, [sam_rho] * (members or 1)) if sam_rho else None
    batches = endless(source.epoch)
    lr = (0.1 if members is None
          else torch.full((members,), 0.1, dtype=torch.float64, device=device))

    def run_steps(n: int) -> None:
        sums = TrainSums.zeros(device, members)
        train_steps(step_model, itertools.islice(batches, n), loss_fn, optimizer,
                    lr_for_step=lambda step: lr, sums=sums, sam=sam)

    return run_steps


# ---- the run -------------------------------------------------------------------------------

Way = tuple[str, Callable[[], Callable[[int], None]], int]  # name, builder, images per step


def rates_result(name: str, rates: list[float], seconds: float) -> dict[str, Any]:
    result = {"name": name, "images_per_s": statistics.median(rates),
              "window_images_per_s": [round(r, 1) for r in rates],
              "seconds_total": round(seconds, 1),
              # other processes on the machine skew CPU numbers: record how busy it was
              "load_average_1min_after": round(os.getloadavg()[0], 2)}
    print(f"  {name}: {result['images_per_s']:,.0f} images/s", file=sys.stderr, flush=True)
    return result


def measure(way: Way, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    name, make, images_per_step = way
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    run_steps = make()
    times = timed_windows(run_steps, warmup=args.warmup, windows=args.windows,
                          steps=args.steps, device=device)
    result = rates_result(name, [images_per_step * args.steps / t for t in times],
                          time.perf_counter() - t0)
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return result


def measure_interleaved(ways: list[Way], args: argparse.Namespace,
                        device: torch.device) -> list[dict[str, Any]]:
    """Every way built and warmed up, then timed one window each per round (see --interleave);
    each result's `window_images_per_s` is in round order, so `_add_ratios` can pair them."""
    t0 = time.perf_counter()
    runners = [make() for _, make, _ in ways]
    for run_steps in runners:
        run_steps(args.warmup)
    settle = max(1, 2 * args.workers)  # DataLoader's prefetch: 2 batches per worker
    per_round: list[list[float]] = [[] for _ in ways]
    for round_ in range(args.windows):
        order = range(len(ways)) if round_ % 2 == 0 else reversed(range(len(ways)))
        for i in order:
            per_round[i] += timed_windows(runners[i], warmup=settle, windows=1,
                                          steps=args.steps, device=device)
    seconds = time.perf_counter() - t0
    return [rates_result(name, [images_per_step * args.steps / t for t in times], seconds)
            for (name, _, images_per_step), times in zip(ways, per_round)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dataset", default="synthetic", help="synthetic, cifar10 or a path")
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--ks", default="4,8,16", help="fused group sizes, e.g. 1,2,4,8,16; "
                        "empty for none")
    parser.add_argument("--only", default="a,b,c", help="which of a,b,c,d to run (d: (b) "
                        "with SAM, two passes a step)")
    parser.add_argument("--sam-rho", type=float, default=0.05, help="SAM's rho in (d)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (median)")
    parser.add_argument("--steps", type=int, default=5, help="steps per window")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of (a)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (b) and (c)")
    parser.add_argument("--compile-mode", default=None,
                        choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile's mode (reduce-overhead: CUDA graphs, for "
                             "launch-bound steps); implies --compile")
    parser.add_argument("--interleave", action="store_true",
                        help="time the ways in alternating rounds and add paired ratios (for "
                             "noisy shared machines; no peak memory)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--profile", type=Path, default=None,
                        help="then profile --steps steps of each way (torch.profiler): wall "
                             "vs device-busy time and the top operators, as text, here")
    return parser


def _add_ratios(results: list[dict[str, Any]], only: set[str], interleaved: bool) -> None:
    """Each way's images/s as a multiple of (a) (paired per window when interleaved) and the
    fused and SAM ways' as a multiple of (b)."""
    base = results[0] if "a" in only else None
    single = next((r for r in results if r["name"].startswith("b")), None)
    for r in results:
        if base:
            r["ratio_to_a"] = round(r["images_per_s"] / base["images_per_s"], 2)
            if interleaved:  # the median over rounds of the ratio within a round
                pairs = zip(r["window_images_per_s"], base["window_images_per_s"])
                r["paired_ratio_to_a"] = round(statistics.median(x / y for x, y in pairs), 2)
        if single and r["name"].startswith(("c", "d")):
            r["ratio_to_b"] = round(r["images_per_s"] / single["images_per_s"], 2)
    for r in results:
        r["images_per_s"] = round(r["images_per_s"], 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    args.compile = args.compile or args.compile_mode is not None

    from cifarctl.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset(args.dataset)
    ks = [int(k) for k in args.ks.split(",") if k.strip()]
    only = set(args.only.split(","))
    batch = args.batch_size
    ways: list[Way] = []
    if "a" in only:
        ways.append(("a reference (PIL DataLoader, .item())",
                     lambda: reference(data, args, device), batch))
    if "b" in only:
        ways.append(("b cifarctl engine", lambda: cifarctl_run(data, args, device, None), batch))
    if "c" in only:
        ways += [(f"c fused K={k}", lambda k=k: cifarctl_run(data, args, device, k), k * batch)
                 for k in ks]
    if "d" in only:
        ways.append((f"d cifarctl engine + SAM (rho {args.sam_rho:g})",
                     lambda: cifarctl_run(data, args, device, None, args.sam_rho), batch))
    results = (measure_interleaved(ways, args, device) if args.interleave
               else [measure(way, args, device) for way in ways])
    _add_ratios(results, only, args.interleave)
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{platform.processor() or platform.machine()} cpu"
                        f" x{torch.get_num_threads()} threads")
    report = {"benchmark": "throughput", "device": str(device), "device_name": device_name,
              "torch": torch.__version__, "model": args.model, "batch_size": batch,
              "dataset": data.name, "warmup": args.warmup, "windows": args.windows,
              "steps": args.steps, "workers": args.workers, "compile": args.compile,
              "compile_mode": args.compile_mode,
              "interleaved": args.interleave,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": results}
    _print_table(report)
    if args.profile:
        args.profile.write_text("".join(profile(way, args, device) for way in ways))
    emit(report, args.json)
    return report


def profile(way: Way, args: argparse.Namespace, device: torch.device) -> str:
    """One way under torch.profiler: its 25 costliest operators and the time the device was
    busy, against the steps' wall time (a launch-bound step keeps a GPU mostly idle)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    name, build, _ = way
    run_steps = build()
    run_steps(args.warmup)
    sync(device)
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profiler(activities=activities) as prof:
        run_steps(args.steps)
        sync(device)
    wall_ms = (time.perf_counter() - t0) * 1000
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    # the table ends with the profiled CPU and device time totals, to set against the wall
    return (f"== {name}: {args.steps} steps, wall {wall_ms:.1f} ms under the profiler\n"
            f"{prof.key_averages().table(sort_by=sort, row_limit=25)}\n")


def _compiled(report: dict[str, Any]) -> str:
    if not report["compile"]:
        return "eager"
    return f"compiled, {report['compile_mode']}" if report["compile_mode"] else "compiled"


def _print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"training images/s, {report['model']} batch {report['batch_size']} on "
                        f"{report['device_name']} ({_compiled(report)}"
                        f"), median of {report['windows']} x {report['steps']} steps"
                        f"{', interleaved' if report['interleaved'] else ''}")
    columns = {"way": lambda r: r["name"], "images/s": lambda r: f"{r['images_per_s']:,.0f}",
               "x (a)": lambda r: f"{r.get('ratio_to_a', ''):}"}
    if report["interleaved"] and "paired_ratio_to_a" in report["results"][0]:
        columns["x (a), paired"] = lambda r: f"{r['paired_ratio_to_a']}"
    columns["x (b)"] = lambda r: f"{r.get('ratio_to_b', ''):}"
    if report["device"] == "cuda" and not report["interleaved"]:
        columns["peak GiB"] = lambda r: f"{r['peak_memory_gib']:.2f}"
    for column in columns:
        table.add_column(column, justify="left" if column == "way" else "right")
    for r in report["results"]:
        table.add_row(*(cell(r) for cell in columns.values()))
    Console(stderr=True).print(table)


if __name__ == "__main__":
    main()
