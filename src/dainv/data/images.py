"""``folder:PATH`` and ``tinyimagenet:PATH``: decoded once with Pillow by worker processes into a
uint8 cache in ``user_cache_dir()/images/``, keyed by every file's path, size and time."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dainv.data.core import Dataset, LoadOptions, from_arrays, user_cache_dir
from dainv.data.manifest import verify_manifests
from dainv.errors import DataError, RunError
from dainv.runio import atomic_write

CACHE_VERSION = 1
MAX_IMAGE_SIZE = 4096
_CHUNK = 64  # files per task sent to a worker process
_POOL_MIN_FILES = 256  # fewer files than this are decoded in-process

FOLDER_LAYOUT = ("A folder data set is laid out as PATH/train/<class>/<image files> and PATH/test/<class>/<image "
                 "files> (or PATH/val/...), with the same class folders in both; any format Pillow reads (PNG, "
                 "JPEG, BMP, ...).")  # fmt: skip
TINY_LAYOUT = ("A Tiny ImageNet folder (tiny-imagenet-200/) holds wnids.txt, train/<wnid>/images/*.JPEG and "
               "val/images/*.JPEG with val/val_annotations.txt (file name, tab, wnid per line).")  # fmt: skip


class Item(NamedTuple):
    """One image file and its label."""

    path: Path
    label: int


def _image_extensions() -> frozenset[str]:
    from PIL import Image  # here, not at the top: importing Pillow takes about 0.1 s
    Image.init()
    # formats Pillow can open, not the save-only ones (PDF, ...)
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def scan_images(folder: Path, label: int, exts: frozenset[str], left_out: list[Path]) -> list[Item]:
    """Image files under ``folder`` (recursive, sorted, hidden skipped); other files and non-regular entries (a FIFO
    would block) go to ``left_out``. Linked folders are followed once each (device, inode): a loop adds nothing."""
    items, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            st = None
        if st is None or (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(n for n in filenames if not n.startswith(".")):
            path = Path(dirpath) / name
            try:
                regular = os.path.splitext(name)[1].lower() in exts and stat.S_ISREG(path.stat().st_mode)
            except OSError:  # a broken link: the decoder reports it as unreadable
                regular = True
            if regular:
                items.append(Item(path, label))
            else:
                left_out.append(path)
    return items


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_items(root: Path) -> tuple[dict[str, list[Item]], list[str], list[str]]:
    """``({"train": items, "test": items}, classes, notes)`` of a ``folder:`` data set (label i = i-th name)."""
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}.\n{FOLDER_LAYOUT}")
    test_name = "test" if (root / "test").is_dir() else "val"
    if not (root / "train").is_dir() or not (root / test_name).is_dir():
        found = ", ".join(_subdirs(root)) or "no sub-folders"
        raise DataError(f"{root} is not a folder data set: it needs train/ and test/ (or val/) sub-folders, found "
                        f"{found}.\n{FOLDER_LAYOUT}")  # fmt: skip
    classes, test_classes = _subdirs(root / "train"), _subdirs(root / test_name)
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders.\n{FOLDER_LAYOUT}")
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise DataError(f"The class folders of {root / 'train'} and {root / test_name} differ: only in train: "
                        f"{only_train or 'none'}; only in {test_name}: {only_test or 'none'}. Both splits need the "
                        f"same classes.\n{FOLDER_LAYOUT}")  # fmt: skip
    exts, left_out = _image_extensions(), []
    splits: dict[str, list[Item]] = {"train": [], "test": []}
    notes = [f"test split: {root / test_name}"]
    for split, sub in (("train", "train"), ("test", test_name)):
        for label, cls in enumerate(classes):
            items = scan_images(root / sub / cls, label, exts, left_out)
            if split == "train" and not items:
                raise DataError(f"Class folder {root / sub / cls} holds no image files; every class needs training "
                                f"images (remove the folder if the class is not wanted).\n{FOLDER_LAYOUT}")  # fmt: skip
            splits[split].extend(items)
        loose = sorted(p.name for p in (root / sub).iterdir()
                       if p.suffix.lower() in exts and not p.name.startswith("."))  # fmt: skip
        if loose:
            notes.append(f"ignored {len(loose)} image file(s) directly in {root / sub} (e.g. {loose[0]}): only "
                         f"images in class folders ({sub}/<class>/) are read; move them into theirs")  # fmt: skip
    not_files = [str(p) for p in left_out if p.suffix.lower() in exts]
    if len(left_out) > len(not_files):
        notes.append(f"ignored {len(left_out) - len(not_files)} file(s) that are not images (by file extension)")
    if not_files:
        notes.append(f"skipped {len(not_files)} entry(ies) with an image name that are not regular files (a FIFO, "
                     f"socket or device): {'; '.join(not_files[:3])}{' ...' if len(not_files) > 3 else ''}")  # fmt: skip
    return splits, classes, notes


def tinyimagenet_items(root: Path) -> tuple[dict[str, list[Item]], list[str], list[str]]:
    """The official Tiny ImageNet layout, wnids sorted; its labelled ``val/`` is the test split."""

    def lines(path: Path) -> list[str]:
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"Cannot read {path}: {exc}.\n{TINY_LAYOUT}") from None

    wnids = [w.strip() for w in lines(root / "wnids.txt") if w.strip()]
    dups = [w for w, n in Counter(wnids).items() if n > 1]
    if len(wnids) < 2 or dups:
        what = f"repeats {dups[:5]}" if dups else f"lists {len(wnids)} class(es)"
        raise DataError(f"{root / 'wnids.txt'} {what}; it needs one wnid per line.\n{TINY_LAYOUT}")
    classes = sorted(wnids)
    index = {w: i for i, w in enumerate(classes)}
    exts = _image_extensions()
    train: list[Item] = []
    for w in classes:
        folder = root / "train" / w / "images"
        if not folder.is_dir():
            raise DataError(f"Tiny ImageNet class folder {folder} is missing.\n{TINY_LAYOUT}")
        items = scan_images(folder, index[w], exts, [])
        if not items:
            raise DataError(f"{folder} holds no images.\n{TINY_LAYOUT}")
        train.extend(items)
    ann = root / "val" / "val_annotations.txt"
    test: list[Item] = []
    for number, line in enumerate(lines(ann), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            raise DataError(f"{ann}, line {number}: expected '<file>\\t<wnid>...' with a wnid from wnids.txt, got "
                            f"{line[:80]!r}.\n{TINY_LAYOUT}")  # fmt: skip
        test.append(Item(root / "val" / "images" / parts[0].strip(), index[parts[1].strip()]))
    if not test:
        raise DataError(f"{ann} lists no images.\n{TINY_LAYOUT}")
    notes = [] if len(classes) == 200 else [f"{len(classes)} classes (the official set has 200)"]
    return {"train": train, "test": test}, classes, notes


def decode_files(paths: list[str], size: int | None) -> list[np.ndarray | str]:
    """uint8 ``(H, W, 3)`` arrays (``size`` × ``size`` if given), or the reason a file failed."""
    from PIL import Image  # see _image_extensions
    out: list[np.ndarray | str] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                if size is not None and im.format == "JPEG":
                    im.draft("RGB", (size, size))  # decode big JPEGs at a reduced scale
                rgb = im.convert("RGB")
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            out.append(np.asarray(rgb, dtype=np.uint8))
        except Exception as exc:  # any decoder failure is the file's fault, reported by name
            out.append(f"{type(exc).__name__}: {exc}".strip())
    return out


def decode_all(paths: list[str], size: int | None, workers: int | None) -> tuple[list, int]:
    """(results, processes used): a fork pool of ``workers`` (``$DAINV_DATA_WORKERS``, ≤ 8) for many files."""
    env = os.environ.get("DAINV_DATA_WORKERS", "")
    n = max(1, int(workers) if workers is not None else int(env) if env.isdigit() else min(8, os.cpu_count() or 1))
    can_fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    if n == 1 or len(paths) < _POOL_MIN_FILES or not can_fork:
        return decode_files(paths, size), 1
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]
    used = min(n, len(chunks))
    try:  # fork: no re-import of torch in the children
        with ProcessPoolExecutor(max_workers=used, mp_context=multiprocessing.get_context("fork")) as pool:
            parts = list(pool.map(decode_files, chunks, [size] * len(chunks)))
    except BrokenProcessPool:
        raise DataError("A process decoding images died (out of memory, or a crash in an image decoder) while "
                        f"reading {len(paths)} files. Run again with fewer processes: DAINV_DATA_WORKERS=1 (one "
                        "file at a time shows which file is at fault).") from None  # fmt: skip
    return [r for part in parts for r in part], used


def _bad_images(spec: str, bad: list[str]) -> DataError:
    shown = "\n".join(f"  {b}" for b in bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
    return DataError(f"Cannot read {len(bad)} image file(s) of {spec}:\n{shown}\nFix or delete these files, or set "
                     "data.skip_bad=true (dainv evaluate --skip-bad; skip_bad=True in Python) to leave unreadable "
                     "images out; they are then counted and reported.")  # fmt: skip


def _decode_splits(splits: dict[str, list[Item]], spec: str, o: LoadOptions) -> tuple[dict, list[str], str]:
    """(arrays uint8 ``(N, 3, H, W)``, the unreadable files, a timing note); one image size for all."""
    order, n_train = splits["train"] + splits["test"], len(splits["train"])
    t0 = time.perf_counter()
    results, used = decode_all([str(it.path) for it in order], o.image_size, o.workers)
    seconds = time.perf_counter() - t0
    bad = [f"{it.path}: {r}" for it, r in zip(order, results) if isinstance(r, str)]
    good = [(it, r) for it, r in zip(order, results) if not isinstance(r, str)]
    if (bad and not o.skip_bad) or not good:
        raise _bad_images(spec, bad)
    sizes = Counter(r.shape[:2] for _, r in good)
    if len(sizes) > 1:
        examples = {}
        for it, r in good:
            examples.setdefault(r.shape[:2], it.path)
        listed = "; ".join(f"{w}x{h} (width x height): {n} image(s), e.g. {examples[(h, w)]}"
                           for (h, w), n in sizes.most_common(5))  # fmt: skip
        raise DataError(f"The images of {spec} have {len(sizes)} different sizes: {listed}. Resize every image to "
                        "N x N pixels: dainv evaluate --image-size 64, dainv train/reproduce --set "
                        "data.image_size=64, or image_size=64 in Python.")  # fmt: skip
    arrays: dict[str, np.ndarray] = {}
    for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        part = [(it, r) for it, r in zip(order[sl], results[sl]) if not isinstance(r, str)]
        if not part:
            raise DataError(f"No readable {split} images in {spec}.")
        x = arrays[f"x_{split}"] = np.empty((len(part), 3, *good[0][1].shape[:2]), dtype=np.uint8)
        for i, (_, r) in enumerate(part):
            x[i] = r.transpose(2, 0, 1)
        arrays[f"y_{split}"] = np.asarray([it.label for it, _ in part], dtype=np.int64)
    return arrays, bad, f"decoded {len(good)} images in {seconds:.1f} s ({used} process(es))"


def _cache_path(root: Path, kind: str, splits: dict[str, list[Item]], classes: list[str],
                image_size: int | None) -> tuple[Path | None, str]:  # fmt: skip
    """The cache file (None: no home folder) and its key, the hash of every file's path, size and
    mtime; the name's prefix lets a new cache replace the stale ones of its folder, kind and size."""
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "kind": kind, "image_size": image_size, "classes": classes}
    h.update(json.dumps(head, sort_keys=True).encode())
    for split in ("train", "test"):
        h.update(f"\n#{split}\n".encode())
        for it in splits[split]:
            try:
                st = it.path.stat()
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # missing: the decoder reports it
                size = mtime = -1
            rel = os.fsencode(os.path.relpath(it.path, root))  # any file name, UTF-8 or not
            h.update(rel + f"\0{it.label}\0{size}\0{mtime}\n".encode())
    key = h.hexdigest()[:24]
    tag = hashlib.sha256(os.fsencode(root.absolute())).hexdigest()[:12]
    try:
        folder = user_cache_dir() / "images"
    except (RuntimeError, KeyError):
        return None, key
    return folder / f"{tag}-dainv-cache-{kind}-{image_size or 'own'}-{key}.npz", key


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` when absent, unreadable or made for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        return arrays if meta.get("key") == key and meta.get("version") == CACHE_VERSION else None
    except Exception:  # absent, truncated, foreign: decode again
        return None


def _write_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> bool:
    """Write the cache atomically and remove the stale ones it replaces; False if it cannot."""
    meta = np.asarray(json.dumps({"key": key, "version": CACHE_VERSION}))
    try:
        atomic_write(path, lambda f: np.savez(f, meta=meta, **arrays))
    except RunError:  # not writable, or full
        return False
    for old in set(path.parent.glob(f"{path.name[: -len(key) - 4]}*.npz")) - {path}:  # the stale ones
        old.unlink(missing_ok=True)
    return True


def load_images(spec: str, path: str, o: LoadOptions, *, kind: str, listing) -> Dataset:
    """Load an image data set whose files ``listing(root)`` enumerates, through the cache."""
    size = o.image_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                             or not 1 <= size <= MAX_IMAGE_SIZE):  # fmt: skip
        raise DataError(f"image_size (data.image_size) must be a whole number from 1 to {MAX_IMAGE_SIZE} (pixels "
                        f"per side) or null for the images' own size, got {size!r}.")  # fmt: skip
    o = replace(o, image_size=None if size is None else int(size))
    root = Path(path).expanduser().absolute()
    notes = verify_manifests(root)
    splits, classes, layout_notes = listing(root)
    notes.extend(layout_notes)
    cache, key = _cache_path(root, kind, splits, classes, o.image_size)
    arrays = _read_cache(cache, key) if cache is not None else None
    if arrays is not None:
        skipped = [str(s) for s in arrays.pop("skipped")]
        if skipped and not o.skip_bad:
            raise _bad_images(spec, skipped)
        notes.append(f"loaded {len(arrays['y_train']) + len(arrays['y_test'])} decoded images from the cache {cache}")
    else:
        arrays, skipped, note = _decode_splits(splits, spec, o)
        written = cache is not None and _write_cache(cache, key, {**arrays, "skipped": np.asarray(skipped, dtype=str)})
        notes.append(f"{note}; " + (f"cached in {cache}" if written else "could not write a cache (no writable folder)"))
    if skipped:
        shown = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        notes.append(f"skipped {len(skipped)} unreadable image(s) (skip_bad): {shown}")
    return from_arrays(spec, arrays, where=f"Data set {spec}", source=str(root), classes=classes,
                       allow_missing_classes=o.allow_missing_classes, notes=notes, skipped=skipped)  # fmt: skip
