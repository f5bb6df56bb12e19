"""folder:PATH and tinyimagenet:PATH: layouts, sizes, corrupt files, the decoded-image cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dainv.data import images, load_dataset
from dainv.errors import DataError


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def _png(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = np.full((h, w, 3), value, np.uint8)
    arr[0, 0] = (value + 1) % 256
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)


def _folder(root: Path, sizes=((8, 8),), test: str = "test", per_class: int = 3) -> Path:
    """root/train/{cat,dog}/*.png and root/<test>/{cat,dog}/*.png; pixel value encodes class."""
    for split, n in (("train", per_class), (test, 2)):
        for cls in ["dog", "cat"]:  # written unsorted: labels must be sorted names
            for i in range(n):
                size = sizes[i % len(sizes)]
                value = 100 if cls == "cat" else 200
                _png(root / split / cls / f"{i}.png", size, value)
    return root


def _caches(tmp_path: Path, pattern: str = "*.npz") -> list[Path]:
    """The decode caches in dainv's cache folder (under the test's XDG_CACHE_HOME)."""
    return sorted((tmp_path / "xdg" / "dainv" / "cache" / "images").glob(f"*-{pattern}"))


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = images.decode_files

    def counting(paths, size):
        calls.append(len(paths))
        return real(paths, size)

    monkeypatch.setattr(images, "decode_files", counting)
    return calls


def test_folder_loads_sorted_classes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pets")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / "scan.pdf").write_bytes(b"%PDF-1.4")  # Pillow only writes PDF
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    _png(root / "train" / "cat" / "grey.png", (8, 8), 100, mode="L")  # converted to RGB
    ds = load_dataset(f"folder:{root}")
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds.x_train.shape == (7, 3, 8, 8) and ds.x_test.shape == (4, 3, 8, 8)
    assert ds.x_train.dtype == torch.uint8 and ds.x_train.is_contiguous()
    assert ds.y_train.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert ds.x_train[ds.y_train == 0][:, :, 1, 1].unique().tolist() == [100]
    assert ds.x_test[ds.y_test == 1][:, :, 1, 1].unique().tolist() == [200]
    assert ds.x_train[0, :, 0, 0].tolist() == [101, 101, 101]
    assert ds.name == f"folder:{root}" and ds.source == str(root)
    assert any("ignored 2 file" in n for n in ds.notes)


def test_val_folder_is_the_test_split(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", test="val")
    ds = load_dataset(f"folder:{root}")
    assert len(ds.y_test) == 4 and any(str(root / "val") in n for n in ds.notes)


def test_two_sizes_ask_for_image_size(tmp_path: Path) -> None:
    root = _folder(tmp_path / "mixed", sizes=((8, 8), (12, 10)))
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}")
    msg = str(err.value)
    assert "2 different sizes" in msg and "8x8" in msg and "12x10" in msg
    assert "data.image_size" in msg and err.value.__cause__ is None
    ds = load_dataset(f"folder:{root}", image_size=6)
    assert ds.image_shape == (3, 6, 6) and ds.x_train.shape[0] == 6
    assert ds.x_train[ds.y_train == 0][:, :, 3, 3].unique().tolist() == [100]  # resize, not crop
    for bad in (0, -1, 1.5, True, 10**6):
        with pytest.raises(DataError, match="image_size"):
            load_dataset(f"folder:{root}", image_size=bad)


def test_corrupt_file_is_named_or_skipped(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    bad = root / "train" / "dog" / "broken.png"
    good = (root / "train" / "dog" / "0.png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # truncated PNG
    junk = root / "test" / "cat" / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError) as err:
        load_dataset(f"folder:{root}")
    msg = str(err.value)
    assert "Cannot read 2 image file(s)" in msg
    assert str(bad) in msg and str(junk) in msg and "data.skip_bad=true" in msg
    assert "Traceback" not in msg and err.value.__cause__ is None
    ds = load_dataset(f"folder:{root}", skip_bad=True)
    assert len(ds.skipped) == 2 and str(bad) in ds.skipped[0]
    assert ds.x_train.shape[0] == 6 and ds.x_test.shape[0] == 4  # junk.jpg was a fifth test file
    assert any("skipped 2 unreadable image(s)" in n for n in ds.notes)
    # from the cache: still reported, and still refused without skip_bad
    again = load_dataset(f"folder:{root}", skip_bad=True)
    assert again.skipped == ds.skipped and any("from the cache" in n for n in again.notes)
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(f"folder:{root}")


def test_cache_is_reused_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "d")
    calls = _count_decodes(monkeypatch)
    first = load_dataset(f"folder:{root}")
    assert sum(calls) == 10
    caches = _caches(tmp_path)
    assert len(caches) == 1 and not list(caches[0].parent.glob("*.tmp"))
    second = load_dataset(f"folder:{root}")
    assert sum(calls) == 10, "the second load must not decode again"
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.y_test, second.y_test)
    assert any(str(caches[0]) in n for n in second.notes)
    # another image_size is another cache entry
    load_dataset(f"folder:{root}", image_size=4)
    assert sum(calls) == 20
    # a changed file invalidates it: decoded again, the stale cache removed
    path = root / "train" / "cat" / "1.png"
    _png(path, (8, 8), 50)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_dataset(f"folder:{root}")
    assert sum(calls) == 30
    assert third.x_train[1, 0, 1, 1].item() == 50
    # the stale cache of that image size is removed, the one for image_size=4 is kept
    assert len(_caches(tmp_path, "dainv-cache-folder-own-*.npz")) == 1
    assert len(_caches(tmp_path, "dainv-cache-folder-4-*.npz")) == 1
    # a removed file too
    path.unlink()
    assert load_dataset(f"folder:{root}").x_train.shape[0] == 5
    # a damaged cache is ignored and rebuilt, never an error
    for cache in _caches(tmp_path):
        cache.write_bytes(b"garbage")
    assert load_dataset(f"folder:{root}").x_train.shape[0] == 5


def test_cache_never_lands_in_the_image_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "mine")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    calls = _count_decodes(monkeypatch)
    ds = load_dataset(f"folder:{root}")
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing added there
    user = _caches(tmp_path)
    assert len(user) == 1 and any(str(user[0]) in n for n in ds.notes)
    load_dataset(f"folder:{root}")
    assert sum(calls) == 10


def test_process_pool_matches_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "d", sizes=((9, 7), (5, 6)))
    serial = load_dataset(f"folder:{root}", image_size=5, workers=1)
    for cache in _caches(tmp_path):
        cache.unlink()
    monkeypatch.setattr(images, "_POOL_MIN_FILES", 1)
    monkeypatch.setattr(images, "_CHUNK", 3)
    pooled = load_dataset(f"folder:{root}", image_size=5, workers=2)
    assert any("2 process(es)" in n for n in pooled.notes)
    assert torch.equal(serial.x_train, pooled.x_train) and torch.equal(serial.x_test, pooled.x_test)


FOLDER_FAULTS = {
    "missing": (lambda r: None, "Image folder not found"),
    "no-test": (lambda r: _png(r / "train" / "a" / "0.png", (4, 4), 1), "needs train/ and test/"),
    "class-sets-differ": (
        lambda r: [_png(r / "train" / c / "0.png", (4, 4), 1) for c in "ab"]
        + [_png(r / "test" / c / "0.png", (4, 4), 1) for c in "ac"],
        "only in train: ['b']; only in test: ['c']",
    ),
    "empty-class": (
        lambda r: [_png(r / "train" / "a" / "0.png", (4, 4), 1), (r / "train" / "b").mkdir(),
                   _png(r / "test" / "a" / "0.png", (4, 4), 1), (r / "test" / "b").mkdir()],
        "holds no image files",
    ),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(FOLDER_FAULTS))
def test_folder_layout_errors(tmp_path: Path, fault: str) -> None:
    make, detail = FOLDER_FAULTS[fault]
    root = tmp_path / "d"
    make(root)
    with pytest.raises(DataError, match=detail.replace("[", r"\[").replace("]", r"\]")) as err:
        load_dataset(f"folder:{root}")
    assert "PATH/train/<class>" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet


def _tiny_imagenet(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 2) -> Path:
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for c, w in enumerate(wnids):
        for i in range(per_class):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", 10 * c)
        (root / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
        name = f"val_{c}.JPEG"
        _jpeg(root / "val" / "images" / name, 10 * c)
        lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True)  # unlabelled in the official set: unused
    return root


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(path, quality=95)


def test_tinyimagenet_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tiny_imagenet(tmp_path / "tiny-imagenet-200")
    calls = _count_decodes(monkeypatch)
    ds = load_dataset(f"tinyimagenet:{root}")
    assert ds.classes == ["n01", "n02", "n03"] and ds.num_classes == 3
    assert ds.image_shape == (3, 64, 64)
    assert ds.x_train.shape[0] == 6 and ds.x_test.shape[0] == 3
    # wnids.txt lists n02 first; labels follow the sorted wnids: n02 -> 1, pixel value 0
    assert ds.y_test.tolist() == [1, 0, 2]
    assert abs(int(ds.x_test[0].float().mean()) - 0) <= 2
    assert abs(int(ds.x_test[1].float().mean()) - 10) <= 2
    assert any("3 classes (the official set has 200)" in n for n in ds.notes)
    load_dataset(f"tinyimagenet:{root}")
    assert sum(calls) == 9  # second load from the cache
    assert ds.subset(2, 1).x_train.shape == (2, 3, 64, 64)


def test_tinyimagenet_errors(tmp_path: Path) -> None:
    root = _tiny_imagenet(tmp_path / "t")
    ann = root / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_x.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match="line 4: expected"):
        load_dataset(f"tinyimagenet:{root}")
    ann.write_text(ann.read_text().replace("n99", "n01"))  # listed, but the file is missing
    with pytest.raises(DataError, match="val_x.JPEG"):
        load_dataset(f"tinyimagenet:{root}")
    assert load_dataset(f"tinyimagenet:{root}", skip_bad=True).x_test.shape[0] == 3
    (root / "wnids.txt").unlink()
    with pytest.raises(DataError, match="wnids.txt"):
        load_dataset(f"tinyimagenet:{root}")


def test_heavier_augmentation_on_64x64() -> None:
    from dainv.augment import apply, get_scheme, sample_params

    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    views = apply(x, sample_params(get_scheme("heavier"), 4, torch.Generator().manual_seed(1)))
    assert views.shape == x.shape and torch.isfinite(views).all()
    assert float(views.min()) >= 0.0 and float(views.max()) <= 1.0
    assert not torch.equal(views, x)
