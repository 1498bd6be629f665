"""`cifarctl data`: download, import, generate and inspect datasets (issue 2).

    $ cifarctl data download                        # the official CIFAR-10, cached once
    $ cifarctl data import ../shared/data/cifar10-jpeg.tar.gz
    $ cifarctl data synth --out /tmp/synth --train-per-class 500 --seed 1
    $ cifarctl data info cifar10 --json

Every command calls one function of `cifarctl.data` and shows the cached result: a table of
images per class and split, or with --json exactly one object on stdout. The library is
imported inside the commands, so `cifarctl --help` never loads numpy or torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cifarctl.cli.options import JsonFlag

app = typer.Typer(
    help="Datasets: download CIFAR-10, import a directory or .tar.gz, generate the synthetic "
         "set, show what is cached (under $CIFARCTL_DATA, default ~/.cache/cifarctl).",
    no_args_is_help=True,
)

ForceFlag = Annotated[bool, typer.Option("--force", help="Redo it even if it is cached.")]


def _show(data, as_json: bool) -> None:
    """Render a CifarData: the `info --json` object, or a table on stdout."""
    summary = data.summary()
    if as_json:
        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    title = (f"{data.name}: {summary['train']['count']:,} train, "
             f"{summary['test']['count']:,} test images")
    table = Table()  # the title above it on one line, not wrapped to the table's width
    for column in ("label", "class", "train", "test"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for label, name in enumerate(data.classes):
        table.add_row(str(label), name, f"{summary['train']['per_class'][label]:,}",
                      f"{summary['test']['per_class'][label]:,}")
    console = Console()
    console.print(title, style="bold", highlight=False)
    console.print(table)
    console.print(f"fingerprint {data.fingerprint}\ncache       {data.path}", highlight=False)


@app.command("download")
def download_command(*, force: ForceFlag = False, as_json: JsonFlag = False) -> None:
    """Download the official CIFAR-10 python release, check its md5 and cache it.

    $CIFARCTL_CIFAR10_URL and $CIFARCTL_CIFAR10_MD5 (set together) name a mirror.
    """
    from cifarctl.data import download_cifar10, load_dataset

    _show(download_cifar10() if force else load_dataset("cifar10"), as_json)


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(
        help="Directory or .tar.gz with CIFAR python batches (data_batch_1..5, test_batch, "
             "batches.meta) or image folders (train/<class>/*.png|jpg, test/<class>/...).",
        show_default=False)],
    *, force: ForceFlag = False, as_json: JsonFlag = False,
) -> None:
    """Import a dataset into the cache; later --dataset SOURCE loads it in well under 2 s."""
    from cifarctl.data import import_dataset

    _show(import_dataset(source, force=force), as_json)


@app.command("synth")
def synth_command(
    *,
    out: Annotated[Path | None, typer.Option(
        help="Write CIFAR python batch files here (import them with `data import OUT`); "
             "without it, cache the set as the `synthetic` dataset.",
        show_default=False)] = None,
    # Defaults repeat SynthSpec's (a test checks) so --help shows them without numpy.
    train_per_class: Annotated[int, typer.Option(help="Training images per class.")] = 1000,
    test_per_class: Annotated[int, typer.Option(help="Test images per class.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same bytes.")
                    ] = 0,
    difficulty: Annotated[float, typer.Option(
        help="0 = clean shapes, 1 = heavy overlap between classes.")] = 0.5,
    as_json: JsonFlag = False,
) -> None:
    """Generate the synthetic dataset: ten shape/texture classes under noise and colour jitter."""
    from cifarctl.data import synthesize
    from cifarctl.data.synth import SynthSpec, write_batches

    spec = SynthSpec(train_per_class=train_per_class, test_per_class=test_per_class,
                     seed=seed, difficulty=difficulty)
    if out is None:
        _show(synthesize(spec), as_json)
        return
    arrays = write_batches(out, spec)
    if as_json:  # the `info --json` object of what was written (the fingerprint an import
        # of OUT will have), with the spec and the folder
        from cifarctl.data.dataset import CifarData, fingerprint

        written = CifarData.from_arrays(arrays, name="synthetic", fingerprint=fingerprint(arrays),
                                        path=out)
        typer.echo(json.dumps({**written.summary(), "out": str(out), **spec.to_dict()}))
    else:
        typer.echo(f"wrote {len(arrays.train_labels):,} train and {len(arrays.test_labels):,} "
                   f"test images as CIFAR batches to {out}; use it with "
                   f"`cifarctl data import {out}` or --dataset {out}")


@app.command("info")
def info_command(
    dataset: Annotated[str, typer.Argument(
        help="`synthetic`, `cifar10` or a path; created on first use.")] = "synthetic",
    *, as_json: JsonFlag = False,
) -> None:
    """Images per class and split, content fingerprint and cache file of a dataset."""
    from cifarctl.data import load_dataset

    _show(load_dataset(dataset), as_json)


@app.command("list")
def list_command(*, as_json: JsonFlag = False) -> None:
    """Every dataset in the cache: file, name, images, size, where it came from.

    An import is cached per source and version of it, so a re-imported or edited source
    leaves its older entries here; `cifarctl data rm FILE` removes one. A leftover is the
    temp file of an import killed while writing (the next write deletes it too).
    """
    from cifarctl.data.cache import data_root, entries

    found = entries()
    if as_json:
        typer.echo(json.dumps({"root": str(data_root()), "entries": [e.to_dict() for e in found]}))
        return
    from rich.console import Console
    from rich.table import Table

    total = sum(e.size for e in found)
    table = Table(title=f"{data_root()}: {len(found)} cached dataset"
                        f"{'s' * (len(found) != 1)}, {total / 2**20:,.0f} MB")
    for column in ("file", "name", "train", "test", "MB", "source"):
        table.add_column(column, justify="right" if column in ("train", "test", "MB") else "left",
                         overflow="fold", no_wrap=column == "file")  # a file name to copy
    for e in found:  # a damaged entry or a leftover has no counts and no source
        counts = ("", "") if e.problem else (f"{e.train:,}", f"{e.test:,}")
        what = f"[red]{'leftover' if e.leftover else 'damaged'}: {e.problem}[/]"
        table.add_row(e.path.name, what if e.problem else e.name, *counts,
                      f"{e.size / 2**20:,.1f}", e.source)
    Console().print(table)


@app.command("rm")
def rm_command(
    entries: Annotated[list[str], typer.Argument(
        metavar="FILE...", help="Cache files (or leftovers) as `cifarctl data list` names "
                                "them (the .npz may be left out).", show_default=False)],
) -> None:
    """Delete cached datasets. A run's data is imported again from its source on next use
    (the fingerprint is of the pixels, so a resume still finds it the same)."""
    from cifarctl.data.cache import remove

    for path in remove(entries):
        typer.echo(f"removed {path}")
