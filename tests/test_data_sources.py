"""Importing datasets: the CIFAR batch format, image folders, the cache, and every bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    assert_one_line_error,
    encode,
    run_cli,
    tar_gz,
    tiny_arrays,
    write_image_folder,
)

from cifarctl.data import cache, cifar_batches, load_dataset
from cifarctl.data.sources import read_source
from cifarctl.errors import UsageError


def _cached_files(home: Path) -> list[str]:
    return sorted(p.name for p in home.iterdir()) if home.exists() else []


def _regroup(arrays, classes: tuple[str, ...], split: str) -> np.ndarray:
    """`split` images of `arrays` reordered class by class in the order `classes`."""
    images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
    return np.concatenate([images[labels == arrays.classes.index(c)] for c in classes])


# --- the CIFAR python-batch format --------------------------------------------------------

def test_batch_files_follow_the_official_layout(tmp_path):
    arrays = tiny_arrays(train_per_class=5)
    cifar_batches.write(tmp_path, arrays)
    assert sorted(os.listdir(tmp_path)) == ["batches.meta", "data_batch_1", "data_batch_2",
                                            "data_batch_3", "data_batch_4", "data_batch_5",
                                            "test_batch"]
    # Read with plain pickle, as every CIFAR loader does: rows are R, G, B planes of 32x32.
    with open(tmp_path / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    data, labels = batch[b"data"], batch[b"labels"]
    assert data.dtype == np.uint8 and data.shape == (3, 3072)
    first = arrays.train_images[0]
    for channel in range(3):
        assert (data[0, channel * 1024:(channel + 1) * 1024] == first[:, :, channel].ravel()).all()
    assert labels == arrays.train_labels[:3].tolist()
    with open(tmp_path / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="bytes")[b"label_names"] == [b"cat", b"ant", b"bee"]


def test_batch_parser_round_trip(tmp_path):
    arrays = tiny_arrays(train_per_class=7, test_per_class=3)
    cifar_batches.write(tmp_path / "cifar-10-batches-py", arrays)
    parsed = read_source(tmp_path, progress=_quiet())  # the enclosing folder is found
    assert parsed.classes == arrays.classes
    for got, want in zip(parsed[1:], arrays[1:]):
        assert got.dtype == want.dtype and (got == want).all()


def test_batch_parser_reads_numpy1_pickles(tmp_path):
    # The official release was pickled by numpy 1 (numpy.core...), newer files name numpy._core.
    arrays = tiny_arrays()
    cifar_batches.write(tmp_path, arrays)
    for name in ("data_batch_1", "test_batch"):
        blob = (tmp_path / name).read_bytes()
        assert b"numpy._core.multiarray" in blob
        (tmp_path / name).write_bytes(blob.replace(b"numpy._core.multiarray",
                                                   b"numpy.core.multiarray"))
    parsed = read_source(tmp_path, progress=_quiet())
    assert (parsed.test_images == arrays.test_images).all()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_batch_parser_refuses_to_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cifar_batches.write(tmp_path / "set", tiny_arrays())
    (tmp_path / "set" / "test_batch").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    with pytest.raises(UsageError, match="refusing to load posix.system|refusing to load os"):
        read_source(tmp_path / "set", progress=_quiet())
    assert not (tmp_path / "pwned").exists()


def _quiet():
    from cifarctl.data.progress import NullProgress

    return NullProgress()


# --- image folders ------------------------------------------------------------------------

def test_image_folder_tarball_png_and_jpg(data_home, tmp_path):
    arrays = tiny_arrays(train_per_class=6, test_per_class=3)
    folder = write_image_folder(tmp_path / "myset", arrays, jpeg_every=3)
    tarball = tar_gz(folder, tmp_path / "myset.tar.gz")
    result = run_cli("data", "import", str(tarball), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["ant", "bee", "cat"]  # sorted folder names
    assert summary["train"] == {"count": 18, "per_class": [6, 6, 6]}
    assert summary["test"] == {"count": 9, "per_class": [3, 3, 3]}

    data = load_dataset(str(tarball))
    assert Path(summary["path"]) == data.path and data.path.parent == data_home
    assert data.name == "myset"
    from PIL import Image

    for split in ("train", "test"):
        want = _regroup(arrays, data.classes, split)
        got = getattr(data, f"{split}_images")
        labels = getattr(data, f"{split}_labels")
        assert labels.tolist() == sorted(labels.tolist())
        files = sorted((tarball.parent / "myset" / split).glob("*/*"),
                       key=lambda p: (data.classes.index(p.parent.name), p.name))
        for image, expected, file in zip(got, want, files):
            if file.suffix == ".png":  # lossless: exactly the pixels written
                assert (image == expected).all()
            else:  # JPEG: what an independent decoder (PIL) reads, up to IDCT rounding
                reference = np.asarray(Image.open(file).convert("RGB")).astype(int)
                assert np.abs(image.astype(int) - reference).max() <= 2


def test_image_folder_names_file_sets_class_order(data_home, tmp_path):
    arrays = tiny_arrays()
    folder = write_image_folder(tmp_path / "outer" / "named", arrays)
    cifar_batches.write(tmp_path / "meta", arrays)
    shutil.copy(tmp_path / "meta" / "batches.meta", folder / "batches.meta")
    data = load_dataset(str(tmp_path / "outer"))  # a directory, two enclosing folders deep
    assert data.classes == ("cat", "ant", "bee")
    assert (data.train_images == arrays.train_images).all()
    assert (data.test_labels == arrays.test_labels).all()


def test_import_is_cached_until_the_source_changes(data_home, tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "set", tiny_arrays())
    first = load_dataset(str(folder))

    def no_reimport(*args, **kwargs):
        raise AssertionError("an unchanged source was imported again")

    with monkeypatch.context() as m:
        m.setattr("cifarctl.data.load.read_source", no_reimport)
        again = load_dataset(str(folder))
    assert again.path == first.path and again.fingerprint == first.fingerprint

    changed = tiny_arrays(seed=1)
    (folder / "train" / "ant" / "0004.png").write_bytes(encode(changed.train_images[4], "PNG"))
    edited = load_dataset(str(folder))
    assert edited.path != first.path and edited.fingerprint != first.fingerprint


# --- the cache ----------------------------------------------------------------------------

def test_cache_round_trip_keeps_fingerprint(data_home):
    arrays = tiny_arrays()
    stored = cache.store(arrays, name="t", path=cache.cache_file("t"), source={})
    loaded = cache.load(stored.path)
    assert loaded.fingerprint == stored.fingerprint and len(loaded.fingerprint) == 64
    assert loaded.classes == arrays.classes and (loaded.train_images == arrays.train_images).all()


def test_interrupted_cache_write_leaves_nothing(data_home, monkeypatch):
    def crash(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.store(tiny_arrays(), name="t", path=cache.cache_file("t"), source={})
    assert _cached_files(data_home) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_invalid_cache_file_says_delete_and_reimport(data_home, damage):
    arrays = tiny_arrays()
    path = cache.store(arrays, name="synthetic", path=cache.cache_file("synthetic"),
                       source={}).path
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        cache.store(arrays._replace(test_images=arrays.test_images[:, :16]), name="synthetic",
                    path=path, source={})
    result = run_cli("data", "info", "synthetic")
    assert_one_line_error(result, 2, str(path), "`cifarctl data synth`", "delete the file")
    assert "allow_pickle" not in result.output  # numpy's advice to load pickles is not ours


def test_an_invalid_cache_file_is_made_again_the_way_its_dataset_was(data_home):
    for name, again in (("cifar10", "`cifarctl data download --force`"),
                        ("mine-0123abcd", "`cifarctl data import SOURCE --force`")):
        path = cache.cache_file(name)
        path.write_bytes(b"not a zip file")
        with pytest.raises(cache.CorruptCache) as err:
            cache.load(path)
        assert again in str(err.value) and "delete the file" in str(err.value), name


# --- every bad input: exit code 2, one line, nothing cached --------------------------------

def _png(tmp_path, shape=(32, 32, 3), mode=None) -> bytes:
    import io

    from PIL import Image

    image = Image.fromarray(np.zeros(shape, dtype=np.uint8), mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _batches(tmp_path: Path) -> Path:
    cifar_batches.write(tmp_path / "src", tiny_arrays())
    return tmp_path / "src"


def _folders(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "src", tiny_arrays())


def _bad_source(case: str, tmp_path: Path) -> Path:
    if case == "missing":
        return tmp_path / "nowhere"
    if case == "empty":
        (tmp_path / "src").mkdir()
        return tmp_path / "src"
    if case == "wrong_layout":
        (tmp_path / "src" / "photos").mkdir(parents=True)
        (tmp_path / "src" / "photos" / "a.png").write_bytes(_png(tmp_path))
        return tmp_path / "src"
    if case == "not_an_archive":
        (tmp_path / "src.zip").write_bytes(b"PK\x03\x04 nothing")
        return tmp_path / "src.zip"
    if case in ("corrupt_archive", "half_archive"):
        tarball = tar_gz(_folders(tmp_path), tmp_path / "src.tar.gz")
        blob = tarball.read_bytes()
        tarball.write_bytes(blob[:200] if case == "corrupt_archive" else blob[:len(blob) // 2])
        return tarball
    if case in ("cut_at_member", "garbled_header"):  # tarfile alone takes either for the end
        import gzip
        import io
        import tarfile

        tarball = tar_gz(_folders(tmp_path), tmp_path / "src.tar.gz")
        tar = gzip.decompress(tarball.read_bytes())
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            members = archive.getmembers()
            cut = members[len(members) // 2].offset  # a header in the middle
        tar = tar[:cut] if case == "cut_at_member" else \
            tar[:cut] + b"garbage" * 73 + tar[cut + 511:]
        tarball.write_bytes(gzip.compress(tar))
        return tarball
    if case == "corrupt_batch":
        src = _batches(tmp_path)
        (src / "data_batch_3").write_bytes(b"\x80\x02 definitely not a pickle")
        return src
    if case == "batch_wrong_shape":
        src = _batches(tmp_path)
        with open(src / "test_batch", "wb") as f:
            pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
        return src
    if case.startswith("labels_"):  # a hand-made batch file with labels that are no indices
        src = _batches(tmp_path)
        labels = {"labels_text": ["x"] * 30, "labels_float": [1.7] * 30, "labels_scalar": 5}[case]
        with open(src / "test_batch", "wb") as f:
            pickle.dump({b"data": np.zeros((30, 3072), np.uint8), b"labels": labels}, f)
        return src
    if case == "missing_batch":
        src = _batches(tmp_path)
        (src / "test_batch").unlink()
        return src
    if case == "batch_gap":
        src = _batches(tmp_path)
        (src / "data_batch_2").unlink()
        return src
    src = _folders(tmp_path)
    if case == "class_only_in_test":
        (src / "test" / "dog").mkdir()
        (src / "test" / "dog" / "0.png").write_bytes(_png(tmp_path))
    elif case == "class_only_in_train":
        shutil.rmtree(src / "test" / "bee")
    elif case == "unknown_class_folder":
        cifar_batches.write(tmp_path / "meta", tiny_arrays(classes=("cat", "ant", "emu")))
        shutil.copy(tmp_path / "meta" / "batches.meta", src / "batches.meta")
    elif case == "not_32x32":
        (src / "train" / "cat" / "big.png").write_bytes(_png(tmp_path, (64, 48, 3)))
    elif case == "not_rgb":
        (src / "train" / "cat" / "grey.png").write_bytes(_png(tmp_path, (32, 32), "L"))
    elif case == "corrupt_image":
        (src / "test" / "ant" / "0000.png").write_bytes(b"\x89PNG broken")
    elif case == "loose_image":
        (src / "train" / "loose.png").write_bytes(_png(tmp_path))
    elif case == "extra_folder":
        (src / "val" / "cat").mkdir(parents=True)
        (src / "val" / "cat" / "0.png").write_bytes(_png(tmp_path))
    elif case == "only_train":
        shutil.rmtree(src / "test")
    elif case == "corrupt_jpeg":
        (src / "test" / "ant" / "0000.jpg").write_bytes(b"\xff\xd8\xff broken")
    elif case == "not_an_image":
        (src / "train" / "cat" / "notes.txt").write_text("hello")
    return src


BAD_INPUTS = {
    "missing": "does not exist",
    "empty": "is empty",
    "wrong_layout": "holds neither CIFAR python batches",
    "not_an_archive": "neither a directory nor a .tar.gz",
    "corrupt_archive": "not a readable .tar.gz archive",
    "half_archive": "not a readable .tar.gz archive",
    "cut_at_member": "is truncated or damaged: its tar data stops after",
    "garbled_header": "without the end-of-archive block",
    "corrupt_batch": "data_batch_3 in",
    "batch_wrong_shape": "'data' must be a uint8 (N, 3072) array",
    "missing_batch": "lacks test_batch",
    "labels_text": "'labels' must be integer class indices, got <U1 values such as 'x'",
    "labels_float": "got float64 values such as 1.7",
    "labels_scalar": "'labels' must be a list of class indices, got int",
    "batch_gap": "lacks data_batch_2",
    "class_only_in_test": "['dog'] in test/ but not in train/",
    "class_only_in_train": "['bee'] in train/ but not in test/",
    "unknown_class_folder": "do not match the label_names",
    "not_32x32": "big.png is 48x64 RGB; every image must be 32x32 RGB",
    "not_rgb": "grey.png is 32x32 L;",
    "corrupt_image": "0000.png is not a readable image",
    "corrupt_jpeg": "0000.jpg is not a readable image (not a PNG or JPEG file)",
    "only_train": "no test/ folder with images in test/<class>/",
    "loose_image": "train/loose.png is not at train/<class>/<image>",
    "extra_folder": "unexpected folder 'val/'",
    "not_an_image": "notes.txt is not a .png or .jpg image",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, data_home, tmp_path):
    source = _bad_source(case, tmp_path)
    assert_one_line_error(run_cli("data", "import", str(source)), 2, BAD_INPUTS[case])
    assert not any(name.endswith(".npz") for name in _cached_files(data_home))
    # --dataset PATH everywhere goes through the same path
    with pytest.raises(UsageError, match="^[^\n]*$"):
        load_dataset(str(source))


def test_writing_batches_is_all_or_nothing(tmp_path, monkeypatch):
    """An interrupted `data synth --out` leaves the folder as it was (here: an older set),
    never a few new batches beside old ones; a file in the way is one line."""
    old = tiny_arrays(seed=1)
    cifar_batches.write(tmp_path / "out", old)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real_dump, calls = cifar_batches._dump, []

    def dump_then_interrupt(path, obj):
        calls.append(path.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_dump(path, obj)

    monkeypatch.setattr(cifar_batches, "_dump", dump_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        cifar_batches.write(tmp_path / "out", tiny_arrays(seed=2))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(UsageError, match="it is a file, not a folder"):
        cifar_batches.write(tmp_path / "file", old)


@pytest.mark.parametrize("spec, name", [("Synthetic", "synthetic"), ("cifar-10", "cifar10")])
def test_a_misspelt_dataset_name_is_pointed_at_the_name(data_home, spec, name):
    assert_one_line_error(run_cli("data", "info", spec), 2,
                          f"no dataset or path {spec!r} (did you mean '{name}'?)")
    with pytest.raises(UsageError, match="the dataset is empty"):
        load_dataset(" ")


def test_data_list_and_rm(data_home, tmp_path):
    """The cache lists what it holds, damaged files included, and `rm` deletes by name, only
    inside the cache, refusing every name before deleting any when one is unknown."""
    folder = write_image_folder(tmp_path / "myset", tiny_arrays())
    imported = json.loads(run_cli("data", "import", str(folder), "--json").stdout)
    cache.store(tiny_arrays(seed=3), name="synthetic", path=cache.cache_file("synthetic"),
                source={"synth": {"seed": 3}})
    (data_home / "junk.npz").write_bytes(b"not an npz")
    in_progress = f"x.npz.tmp-{os.getpid()}"  # a live writer's: no entry, not deleted
    (data_home / in_progress).write_bytes(b"an import in progress")
    listed = json.loads(run_cli("data", "list", "--json").stdout)
    assert listed["root"] == str(data_home)
    by_file = {e["file"]: e for e in listed["entries"]}
    assert sorted(by_file) == sorted([Path(imported["path"]).name, "junk.npz", "synthetic.npz"])
    mine = by_file[Path(imported["path"]).name]
    assert (mine["name"], mine["train"], mine["test"]) == ("myset", 12, 6)
    assert mine["fingerprint"] == imported["fingerprint"]
    assert mine["source"] == str(folder.resolve())
    assert by_file["synthetic.npz"]["source"] == "synth seed 3"
    assert by_file["junk.npz"]["problem"] == "not an .npz archive"
    table = run_cli("data", "list")
    assert table.exit_code == 0 and "damaged: not an .npz archive" in table.stdout

    assert_one_line_error(run_cli("data", "rm", "junk", "nope"), 2, "no cache file 'nope'")
    assert (data_home / "junk.npz").is_file()  # nothing deleted when one name is unknown
    assert_one_line_error(run_cli("data", "rm", "../junk.npz"), 2, "no cache file")
    removed = run_cli("data", "rm", "junk", "synthetic.npz")
    assert removed.exit_code == 0 and removed.stdout.count("removed ") == 2
    assert sorted(p.name for p in data_home.iterdir()) == sorted(
        [Path(imported["path"]).name, in_progress])
