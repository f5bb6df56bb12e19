"""Image files on disk: ``folder:PATH`` (one folder per class) and ``tinyimagenet:PATH``.

Images are decoded once with Pillow (converted to RGB, resized to ``image_size`` ×
``image_size`` with bilinear filtering when asked) by a pool of worker processes, and stored as
one uint8 ``.npz`` cache in dainv's cache folder (:func:`~dainv.data.core.user_cache_dir`
``/images/``, written atomically), never inside the user's image folder. The key hashes every
file's path, size and modification time, the labels and ``image_size``, so a later run loads
the cache in a fraction of a second and any added, removed or changed file makes a new one.
Only regular files are read (a FIFO or socket named ``*.png`` would block or fail); file names
need not be UTF-8.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dainv.data.core import Dataset, check_labels, user_cache_dir
from dainv.data.manifest import verify_manifests
from dainv.errors import DataError, RunError
from dainv.runio import atomic_write

CACHE_VERSION = 1
CACHE_PREFIX = ".dainv-cache-"
MAX_IMAGE_SIZE = 4096
_CHUNK = 64  # files per task sent to a worker process
_POOL_MIN_FILES = 256  # fewer files than this are decoded in-process

FOLDER_LAYOUT = (
    "A folder data set is laid out as PATH/train/<class>/<image files> and "
    "PATH/test/<class>/<image files> (or PATH/val/...), with the same class folders in both; "
    "any format Pillow reads (PNG, JPEG, BMP, ...)."
)
TINY_LAYOUT = (
    "A Tiny ImageNet folder (tiny-imagenet-200/) holds wnids.txt, train/<wnid>/images/*.JPEG "
    "and val/images/*.JPEG with val/val_annotations.txt (file name, tab, wnid per line)."
)


@dataclass
class Scan:
    """What a folder scan left out, for the data set's notes."""

    not_images: int = 0  # by file extension
    not_files: list[str] = field(default_factory=list)  # FIFOs, sockets, devices

    def notes(self) -> list[str]:
        out = []
        if self.not_images:
            out.append(f"ignored {self.not_images} file(s) that are not images (by file extension)")
        if self.not_files:
            shown = "; ".join(self.not_files[:3]) + (" ..." if len(self.not_files) > 3 else "")
            out.append(
                f"skipped {len(self.not_files)} entry(ies) with an image name that are not "
                f"regular files (a FIFO, socket or device): {shown}"
            )
        return out


@dataclass(frozen=True)
class Item:
    """One image file, its label, and what the cache key hashes (size, mtime; -1 if missing)."""

    path: Path
    label: int
    size: int
    mtime_ns: int


def _image_extensions() -> frozenset[str]:
    from PIL import Image

    Image.init()
    return frozenset(  # formats Pillow can open, not the save-only ones (PDF, ...)
        ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN
    )


def _item(path: Path, label: int) -> Item:
    try:
        st = path.stat()
        return Item(path, label, st.st_size, st.st_mtime_ns)
    except OSError:
        return Item(path, label, -1, -1)


def _regular(path: Path) -> bool:
    """Not a FIFO, socket or device (reading one would block or fail); a file that cannot be
    stat'ed (a broken link) counts, for the decoder to report as unreadable."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return True


def scan_images(folder: Path, label: int, exts: frozenset[str], scan: Scan | None = None) -> list[Item]:
    """Image files under ``folder`` (recursively, sorted; hidden names skipped); what else was
    there is counted in ``scan`` (other files; entries that are not regular files, skipped).

    Linked folders are followed, each folder once (by device and inode): a link to a folder
    already read — a loop such as ``cat/again -> ..`` or two links to one folder — adds
    nothing, instead of reading its images again until the path is too long (``ELOOP``).
    """
    items, scan = [], scan if scan is not None else Scan()
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if os.path.splitext(name)[1].lower() not in exts:
                scan.not_images += 1
            elif _regular(path):
                items.append(_item(path, label))
            else:
                scan.not_files.append(str(path))
    return items


def _loose_files(folder: Path, exts: frozenset[str]) -> list[str]:
    """Image files directly in a split folder, outside every class folder (not read)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith("."))
    except OSError:
        return []


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Layouts


def folder_items(root: Path) -> tuple[dict[str, list[Item]], list[str], list[str]]:
    """``({"train": items, "test": items}, classes, notes)`` of a ``folder:`` data set."""
    if not root.is_dir():
        raise DataError(f"Image folder not found: {root}.\n{FOLDER_LAYOUT}")
    test_name = "test" if (root / "test").is_dir() else "val"
    if not (root / "train").is_dir() or not (root / test_name).is_dir():
        found = ", ".join(_subdirs(root)) or "no sub-folders"
        raise DataError(
            f"{root} is not a folder data set: it needs train/ and test/ (or val/) "
            f"sub-folders, found {found}.\n{FOLDER_LAYOUT}"
        )
    train_classes = _subdirs(root / "train")
    test_classes = _subdirs(root / test_name)
    if not train_classes:
        raise DataError(f"{root / 'train'} has no class folders.\n{FOLDER_LAYOUT}")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"The class folders of {root / 'train'} and {root / test_name} differ: only in "
            f"train: {only_train or 'none'}; only in {test_name}: {only_test or 'none'}. Both "
            f"splits need the same classes.\n{FOLDER_LAYOUT}"
        )
    exts = _image_extensions()
    splits: dict[str, list[Item]] = {"train": [], "test": []}
    scan, notes = Scan(), [f"test split: {root / test_name}"]
    for split, sub in (("train", "train"), ("test", test_name)):
        for label, cls in enumerate(train_classes):
            items = scan_images(root / sub / cls, label, exts, scan)
            if split == "train" and not items:
                raise DataError(
                    f"Class folder {root / sub / cls} holds no image files; every class needs "
                    f"training images (remove the folder if the class is not wanted).\n"
                    f"{FOLDER_LAYOUT}"
                )
            splits[split].extend(items)
        loose = _loose_files(root / sub, exts)
        if loose:
            notes.append(
                f"ignored {len(loose)} image file(s) directly in {root / sub} (e.g. {loose[0]}): "
                f"only images in class folders ({sub}/<class>/) are read; move them into theirs"
            )
    return splits, train_classes, notes + scan.notes()


def tinyimagenet_items(root: Path) -> tuple[dict[str, list[Item]], list[str], list[str]]:
    """``({"train": items, "test": items}, wnids, notes)`` of the official Tiny ImageNet layout;
    its labelled ``val/`` split is the test split (the official ``test/`` has no labels)."""
    wnids_file = root / "wnids.txt"
    try:
        wnids = [w.strip() for w in wnids_file.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {wnids_file}: {exc}.\n{TINY_LAYOUT}") from None
    wnids = [w for w in wnids if w]
    dups = [w for w, n in Counter(wnids).items() if n > 1]
    if len(wnids) < 2 or dups:
        what = f"repeats {dups[:5]}" if dups else f"lists {len(wnids)} class(es)"
        raise DataError(f"{wnids_file} {what}; it needs one wnid per line.\n{TINY_LAYOUT}")
    classes = sorted(wnids)
    index = {w: i for i, w in enumerate(classes)}
    exts = _image_extensions()
    train: list[Item] = []
    for w in classes:
        folder = root / "train" / w / "images"
        if not folder.is_dir():
            raise DataError(f"Tiny ImageNet class folder {folder} is missing.\n{TINY_LAYOUT}")
        items = scan_images(folder, index[w], exts)
        if not items:
            raise DataError(f"{folder} holds no images.\n{TINY_LAYOUT}")
        train.extend(items)
    ann = root / "val" / "val_annotations.txt"
    try:
        lines = ann.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read {ann}: {exc}.\n{TINY_LAYOUT}") from None
    test: list[Item] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1].strip() not in index:
            raise DataError(
                f"{ann}, line {number}: expected '<file>\\t<wnid>...' with a wnid from "
                f"wnids.txt, got {line[:80]!r}.\n{TINY_LAYOUT}"
            )
        test.append(_item(root / "val" / "images" / parts[0].strip(), index[parts[1].strip()]))
    if not test:
        raise DataError(f"{ann} lists no images.\n{TINY_LAYOUT}")
    notes = [] if len(classes) == 200 else [f"{len(classes)} classes (the official set has 200)"]
    return {"train": train, "test": test}, classes, notes


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_files(paths: list[str], size: int | None) -> list[np.ndarray | str]:
    """Decode ``paths`` to uint8 ``(H, W, 3)`` arrays (resized to ``size`` × ``size`` if given);
    a file that cannot be decoded gives a string, the reason, instead of an array."""
    from PIL import Image

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


def _decode_task(args: tuple[list[str], int | None]) -> list[np.ndarray | str]:
    return decode_files(*args)


def _workers(requested: int | None) -> int:
    if requested is not None:
        return max(1, int(requested))
    env = os.environ.get("DAINV_DATA_WORKERS", "")
    if env.isdigit():
        return max(1, int(env))
    return max(1, min(8, os.cpu_count() or 1))


def decode_all(paths: list[str], size: int | None, workers: int | None) -> tuple[list, int]:
    """Decode every file, with a process pool for many files; returns (results, workers used)."""
    chunks = [(paths[i : i + _CHUNK], size) for i in range(0, len(paths), _CHUNK)]
    n = _workers(workers)
    can_fork = (
        sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    )
    if n > 1 and len(paths) >= _POOL_MIN_FILES and can_fork:
        ctx = multiprocessing.get_context("fork")  # no re-import of torch in the children
        used = min(n, len(chunks))
        try:
            with ProcessPoolExecutor(max_workers=used, mp_context=ctx) as pool:
                parts = list(pool.map(_decode_task, chunks))
        except BrokenProcessPool:
            raise DataError(
                f"A process decoding images died (out of memory, or a crash in an image "
                f"decoder) while reading {len(paths)} files. Run again with fewer processes: "
                "DAINV_DATA_WORKERS=1 (one file at a time shows which file is at fault)."
            ) from None
    else:
        parts = [_decode_task(c) for c in chunks]
        used = 1
    return [r for part in parts for r in part], used


# ---------------------------------------------------------------------------------------------
# Cache


def cache_key(kind: str, root: Path, splits: dict[str, list[Item]], classes: list[str],
              image_size: int | None) -> str:  # fmt: skip
    """Hash of everything the decoded arrays depend on."""
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "kind": kind, "image_size": image_size, "classes": classes}
    h.update(json.dumps(head, sort_keys=True).encode())
    for split in ("train", "test"):
        h.update(f"\n#{split}\n".encode())
        for it in splits[split]:
            rel = os.fsencode(os.path.relpath(it.path, root))  # any file name, UTF-8 or not
            h.update(rel + f"\0{it.label}\0{it.size}\0{it.mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _cache_paths(root: Path, kind: str, image_size: int | None, key: str) -> list[Path]:
    """Where the cache is looked for and written: dainv's cache folder, never the user's image
    folder (a cache file there is one more file in a listing the user made).

    The name is ``<folder hash>-<prefix><kind>-<size>-<key>.npz``: writing one removes the stale
    ones of the same folder, kind and size, and keeps those made for another ``image_size``.
    No cache folder (no home folder): no cache, the images are decoded each time.
    """
    tag = hashlib.sha256(os.fsencode(root.absolute())).hexdigest()[:12]
    name = f"{CACHE_PREFIX}{kind}-{image_size or 'own'}-{key}.npz"
    paths = []
    with contextlib.suppress(RuntimeError, KeyError):
        paths.append(user_cache_dir() / "images" / f"{tag}-{name[1:]}")
    return paths


def read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or ``None`` when absent, unreadable or made for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
            return None
        for split in ("train", "test"):
            x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
            if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
                return None
        return arrays
    except Exception:  # absent, truncated, foreign: decode again
        return None


def write_cache(paths: list[Path], key: str, arrays: dict[str, np.ndarray]) -> Path | None:
    """Write the cache to the first writable location (atomically); remove stale caches there."""
    meta = np.asarray(json.dumps({"key": key, "version": CACHE_VERSION}))

    def write(f) -> None:
        np.savez(f, meta=meta, **arrays)

    for path in paths:
        try:
            atomic_write(path, write)
        except RunError:  # not writable, or full: the next location
            continue
        stem = path.name[: -len(key) - 4]
        for old in path.parent.glob(f"{stem}*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        return path
    return None


# ---------------------------------------------------------------------------------------------
# Building the data set


def check_image_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or not (1 <= image_size <= MAX_IMAGE_SIZE)
    ):
        raise DataError(
            f"image_size (data.image_size) must be a whole number from 1 to {MAX_IMAGE_SIZE} "
            f"(pixels per side) or null for the images' own size, got {image_size!r}."
        )
    return int(image_size)


def _stack(results: list[np.ndarray], items: list[Item], spec: str) -> np.ndarray:
    """``(N, 3, H, W)`` uint8 from ``(H, W, 3)`` arrays, which must all have one size."""
    sizes = Counter(r.shape[:2] for r in results)
    if len(sizes) > 1:
        examples = {}
        for r, it in zip(results, items):
            examples.setdefault(r.shape[:2], it.path)
        listed = "; ".join(
            f"{w}x{h} (width x height): {n} image(s), e.g. {examples[(h, w)]}"
            for (h, w), n in sizes.most_common(5)
        )
        raise DataError(
            f"The images of {spec} have {len(sizes)} different sizes: {listed}. Resize every "
            "image to N x N pixels: dainv evaluate --image-size 64, dainv train/reproduce --set "
            "data.image_size=64, or image_size=64 in Python."
        )
    h, w = results[0].shape[:2]
    x = np.empty((len(results), 3, h, w), dtype=np.uint8)
    for i, r in enumerate(results):
        x[i] = r.transpose(2, 0, 1)
    return x


def _bad_images(spec: str, bad: list[str]) -> DataError:
    shown = "\n".join(f"  {b}" for b in bad[:10])
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    return DataError(
        f"Cannot read {len(bad)} image file(s) of {spec}:\n{shown}{more}\nFix or delete these "
        "files, or set data.skip_bad=true (dainv evaluate --skip-bad; skip_bad=True in Python) "
        "to leave unreadable images out; they are then counted and reported."
    )


def _decode_splits(splits, spec, image_size, skip_bad, workers):
    """Decode both splits; returns (arrays, skipped, seconds, workers used)."""
    order = splits["train"] + splits["test"]
    t0 = time.perf_counter()
    results, used = decode_all([str(it.path) for it in order], image_size, workers)
    seconds = time.perf_counter() - t0
    bad = [f"{it.path}: {r}" for it, r in zip(order, results) if isinstance(r, str)]
    if bad and not skip_bad:
        raise _bad_images(spec, bad)
    n_train = len(splits["train"])
    arrays: dict[str, np.ndarray] = {}
    good_all = [(it, r) for it, r in zip(order, results) if not isinstance(r, str)]
    if not good_all:
        raise _bad_images(spec, bad)
    # one size check over both splits, so that train and test images match
    if len({r.shape[:2] for _, r in good_all}) > 1:
        _stack([r for _, r in good_all], [it for it, _ in good_all], spec)  # raises
    for split, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        good = [(it, r) for it, r in zip(order[sl], results[sl]) if not isinstance(r, str)]
        if not good:
            raise DataError(f"No readable {split} images in {spec}.")
        arrays[f"x_{split}"] = _stack([r for _, r in good], [it for it, _ in good], spec)
        arrays[f"y_{split}"] = np.asarray([it.label for it, _ in good], dtype=np.int64)
    return arrays, bad, seconds, used


def _cached_or_decoded(splits, spec, kind, root, *, classes, image_size, skip_bad, workers, notes):
    """The decoded arrays and the skipped files: from the first cache that holds them, else
    decoded now (and cached). Appends a note saying which."""
    key = cache_key(kind, root, splits, classes, image_size)
    locations = _cache_paths(root, kind, image_size, key)
    for path in locations:
        arrays = read_cache(path, key)
        if arrays is not None:
            skipped = [str(s) for s in arrays.pop("skipped")]
            if skipped and not skip_bad:
                raise _bad_images(spec, skipped)
            n = len(arrays["y_train"]) + len(arrays["y_test"])
            notes.append(f"loaded {n} decoded images from the cache {path}")
            return arrays, skipped
    arrays, skipped, seconds, used = _decode_splits(splits, spec, image_size, skip_bad, workers)
    n = len(arrays["y_train"]) + len(arrays["y_test"])
    written = write_cache(locations, key, {**arrays, "skipped": np.asarray(skipped, dtype=str)})
    where = f"cached in {written}" if written else "could not write a cache (no writable folder)"
    notes.append(f"decoded {n} images in {seconds:.1f} s ({used} process(es)); {where}")
    return arrays, skipped


def load_images(
    spec: str,
    kind: str,
    root: Path,
    listing,
    *,
    image_size: int | None = None,
    skip_bad: bool = False,
    allow_missing_classes: bool = False,
    workers: int | None = None,
) -> Dataset:
    """Load an image data set whose files ``listing(root)`` enumerates, through the cache."""
    image_size = check_image_size(image_size)
    root = root.expanduser().absolute()
    notes = verify_manifests(root, f"Restore {root} from where it came from (copy it again).")
    splits, classes, layout_notes = listing(root)
    notes.extend(layout_notes)
    arrays, skipped = _cached_or_decoded(splits, spec, kind, root, classes=classes, image_size=image_size,
                                         skip_bad=skip_bad, workers=workers, notes=notes)  # fmt: skip
    if skipped:
        notes.append(
            f"skipped {len(skipped)} unreadable image(s) (skip_bad): "
            + "; ".join(skipped[:5])
            + (" ..." if len(skipped) > 5 else "")
        )
    k = check_labels(
        arrays["y_train"],
        arrays["y_test"],
        where=f"Data set {spec}",
        allow_missing_classes=allow_missing_classes,
        num_classes=len(classes),
    )
    return Dataset(
        name=spec,
        x_train=torch.from_numpy(np.ascontiguousarray(arrays["x_train"])),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(arrays["x_test"])),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=k,
        classes=list(classes),
        source=str(root),
        notes=notes,
        skipped=list(skipped),
    )
