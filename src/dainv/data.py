"""Datasets as uint8 tensors in memory: CIFAR-10, CIFAR-100 (python format) and ``.npz`` files.

Everything is loaded at once (CIFAR-10 is 180 MB as uint8) so that augmentation and batching can
run on the device without a DataLoader. Images stay uint8 ``(N, C, H, W)``;
:func:`images_to_float` gives the [0, 1] floats the model sees (SPEC §4: no normalisation).

Where the CIFAR files are looked for (:func:`resolve_data_root`): an explicit root
(``--data-root``), else ``$DAINV_DATA``, else a per-user cache (:func:`default_data_root`). In that
root, :func:`load_dataset` uses the extracted folder (``cifar-10-batches-py/``), else extracts the
official archive (``cifar-10-python.tar.gz``), else downloads that archive and checks its
published MD5. Extracted folders are *not* checksummed: re-encoded copies with identical pixels
and labels are legitimate. Instead every file is validated (dtype, shape, counts, label range),
and any problem — missing, truncated, malformed — is a :class:`~dainv.errors.DataError` that names
the file and says how to fix it.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dainv.errors import DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "default_data_root",
    "images_to_float",
    "load_dataset",
    "random_dataset",
    "resolve_data_root",
]

DATASETS = ("cifar10", "cifar100")
"""Built-in dataset names; ``"npz:<path>"`` loads a user file as well."""

_ENV_VAR = "DAINV_DATA"


@dataclass(eq=False, repr=False)
class Dataset:
    """Both splits of an image classification dataset, held as tensors.

    ``x_*`` are uint8 ``(N, C, H, W)`` (contiguous), ``y_*`` int64 ``(N,)`` in
    ``[0, num_classes)``. ``source`` is the path actually read, for run records.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: list[str]
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with all four tensors on ``device`` (e.g. once, before training on a GPU)."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(self, n_train: int | None, n_test: int | None) -> Dataset:
        """The first ``n_train`` / ``n_test`` images of each split (``None``: all of it).

        Deterministic (no shuffling) so that quick runs and tests see the same images. The
        result shares storage with ``self``.
        """
        n_tr = self._check_count("n_train", n_train, len(self.y_train), "training")
        n_te = self._check_count("n_test", n_test, len(self.y_test), "test")
        return replace(
            self,
            x_train=self.x_train[:n_tr],
            y_train=self.y_train[:n_tr],
            x_test=self.x_test[:n_te],
            y_test=self.y_test[:n_te],
        )

    def _check_count(self, arg: str, n: int | None, available: int, split: str) -> int:
        if n is None:
            return available
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise DataError(f"{arg} must be a whole number or None, got {n!r}.")
        if not 1 <= n <= available:
            raise DataError(
                f"Cannot take {n} {split} images from {self.name}: it has {available}. "
                f"Use a value from 1 to {available} for {arg} (or leave it unset for all)."
            )
        return int(n)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes}, "
            f"device={self.x_train.device}, source={self.source!r})"
        )


def images_to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (``x / 255``) on the same device; the model's input scale."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"images_to_float expects a uint8 tensor, got {x_uint8.dtype}")
    return x_uint8.to(torch.float32).div_(255.0)


# ---------------------------------------------------------------------------------------------
# Where the data lives


def default_data_root() -> Path:
    """Per-user cache folder: ``$XDG_CACHE_HOME/dainv``, else ``~/.cache/dainv``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else None
    if base is None:
        base = Path.home() / ".cache"
    return base / "dainv"


def _resolve_root(root: str | Path | None) -> tuple[Path, str]:
    """The data root and, for error messages, where that choice came from."""
    if root is not None and str(root) != "":
        return Path(root).expanduser().absolute(), "given explicitly (--data-root)"
    env = os.environ.get(_ENV_VAR, "")
    if env:
        return Path(env).expanduser().absolute(), f"from the {_ENV_VAR} environment variable"
    return (
        default_data_root().absolute(),
        f"the default; override it with --data-root or the {_ENV_VAR} environment variable",
    )


def resolve_data_root(root: str | Path | None) -> Path:
    """The folder CIFAR is looked for in: ``root`` if given, else ``$DAINV_DATA``, else the default."""
    return _resolve_root(root)[0]


# ---------------------------------------------------------------------------------------------
# CIFAR


@dataclass(frozen=True)
class _CifarSpec:
    """Layout of one official CIFAR python archive; ``*_count`` = images per file (strict)."""

    title: str
    folder: str
    archive: str
    url: str
    md5: str
    size_mb: int
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    train_count: int
    test_count: int


_SPECS: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        size_mb=163,
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        train_count=10000,
        test_count=10000,
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        size_mb=161,
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        train_count=50000,
        test_count=10000,
    ),
}

# Globals a CIFAR pickle may reference: numpy's array reconstruction, nothing that runs code.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.load(f, encoding="bytes")`` that refuses globals other than numpy arrays.

    The files come from the internet; a crafted pickle must not be able to run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``; raises ``OSError`` (``URLError``) on any network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "dainv"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fix_hint(spec: _CifarSpec, root: Path) -> str:
    return (
        f"Delete the folder {root / spec.folder} and run again: dainv re-extracts "
        f"{spec.archive} if it is in {root}, else downloads {spec.url}. Or replace the file "
        "with the one from the official archive."
    )


def _bad_file(spec: _CifarSpec, root: Path, path: Path, what: str) -> DataError:
    return DataError(
        f"{spec.title} file {path} is not usable: {what}.\n"
        f"It is probably truncated or damaged. {_fix_hint(spec, root)}"
    )


def _read_pickle(spec: _CifarSpec, root: Path, path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle as a dict with ``str`` keys (py2 files give ``bytes`` keys)."""
    if not path.is_file():
        raise DataError(
            f"{spec.title} folder {root / spec.folder} is incomplete: {path.name} is missing "
            f"(expected {path}).\n{_fix_hint(spec, root)}"
        )
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(
            f"Cannot read {spec.title} file {path}: {exc}. Check its permissions."
        ) from None
    except Exception as exc:  # truncated / not a pickle: EOFError, UnpicklingError, ValueError...
        raise _bad_file(
            spec, root, path, f"it is not a readable pickle ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise _bad_file(spec, root, path, f"expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _require(spec: _CifarSpec, root: Path, path: Path, d: dict[str, Any], key: str) -> Any:
    if key not in d:
        raise _bad_file(spec, root, path, f"key '{key}' is missing (found keys: {sorted(d)})")
    return d[key]


def _read_batch(
    spec: _CifarSpec, root: Path, path: Path, expected: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(data uint8 (n, 3, 32, 32), labels int64 (n,))`` of one batch file."""
    d = _read_pickle(spec, root, path)
    data = _require(spec, root, path, d, "data")
    labels = _require(spec, root, path, d, spec.label_key)
    if not isinstance(data, np.ndarray):
        raise _bad_file(
            spec, root, path, f"'data' is a {type(data).__name__}, expected a numpy array"
        )
    if data.dtype != np.uint8:
        raise _bad_file(spec, root, path, f"'data' has dtype {data.dtype}, expected uint8")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise _bad_file(spec, root, path, f"'data' has shape {data.shape}, expected (n, 3072)")
    n = data.shape[0]
    if n != expected:
        raise _bad_file(spec, root, path, f"it holds {n} images, expected {expected}")
    try:
        y = np.asarray(labels)
    except Exception:  # ragged or exotic content
        y = np.asarray([None])
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise _bad_file(spec, root, path, f"'{spec.label_key}' is not a flat list of integers")
    if len(y) != n:
        raise _bad_file(spec, root, path, f"{len(y)} labels for {n} images")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= spec.num_classes:
        bad = lo if lo < 0 else hi
        raise _bad_file(
            spec,
            root,
            path,
            f"labels out of range: found {bad}, expected 0..{spec.num_classes - 1}",
        )
    return data.reshape(n, 3, 32, 32), y.astype(np.int64)


def _read_cifar_folder(name: str, spec: _CifarSpec, root: Path) -> Dataset:
    folder = root / spec.folder
    meta_path = folder / spec.meta_file
    meta = _read_pickle(spec, root, meta_path)
    names = _require(spec, root, meta_path, meta, spec.names_key)
    if (
        not isinstance(names, (list, tuple))
        or len(names) != spec.num_classes
        or not all(isinstance(s, (bytes, str)) for s in names)
    ):
        raise _bad_file(
            spec, root, meta_path, f"'{spec.names_key}' is not a list of {spec.num_classes} names"
        )
    classes = [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]

    def split(files: tuple[str, ...], count: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_batch(spec, root, folder / f, count) for f in files]
        x = (
            np.concatenate([p[0] for p in parts])
            if len(parts) > 1
            else np.ascontiguousarray(parts[0][0])
        )
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = split(spec.train_files, spec.train_count)
    x_test, y_test = split(spec.test_files, spec.test_count)
    return Dataset(name, x_train, y_train, x_test, y_test, spec.num_classes, classes, str(folder))


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:  # pragma: no cover
    """Fallback for Pythons without extraction filters: plain files and folders inside ``dest``."""
    dest = dest.resolve()
    members = []
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()) or (target != dest and dest not in target.parents):
            raise tarfile.TarError(f"unsafe member {m.name!r}")
        members.append(m)
    return members


def _extract(spec: _CifarSpec, root: Path, archive: Path) -> None:
    """Extract ``archive`` into a temp folder in ``root``, then move its CIFAR folder in place.

    The move is atomic, so an interrupted extraction never leaves a half-written folder behind.
    """
    fix = (
        f"Delete {archive} and run again to download it afresh ({spec.url}), or put the "
        f"extracted {spec.folder}/ folder in {root}."
    )
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.folder}.extract-"))
    except OSError as exc:
        raise DataError(
            f"Cannot extract {archive}: cannot write to {root} ({exc}). Extract it yourself "
            f"(tar xzf {archive.name}) or set --data-root / {_ENV_VAR} to a writable folder."
        ) from None
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
                    tar.extractall(tmp, members=_safe_members(tar, tmp))
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise DataError(
                f"Cannot extract {spec.title} archive {archive}: {exc}.\n{fix}"
            ) from None
        except OSError as exc:
            raise DataError(
                f"Cannot extract {spec.title} archive {archive}: {exc}.\n{fix}"
            ) from None
        if not (tmp / spec.folder).is_dir():
            raise DataError(
                f"{spec.title} archive {archive} does not contain a {spec.folder}/ folder.\n{fix}"
            )
        try:
            os.replace(tmp / spec.folder, root / spec.folder)
        except OSError as exc:
            if not (root / spec.folder).is_dir():  # else: another process extracted it first
                raise DataError(
                    f"Cannot move the extracted {spec.folder}/ into {root}: {exc}.\n{fix}"
                ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_archive(spec: _CifarSpec, root: Path) -> Path:
    """Download the official archive into ``root`` (temp file + atomic rename) and check its MD5."""
    archive = root / spec.archive
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{spec.archive}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        print(
            f"dainv: downloading {spec.url} (about {spec.size_mb} MB) into {root} ...",
            file=sys.stderr,
            flush=True,
        )
        _download(spec.url, tmp)
        actual = _md5(tmp)
        if actual != spec.md5:
            raise DataError(
                f"The downloaded {spec.title} archive {archive.name} (from {spec.url}) failed its "
                f"MD5 check: expected {spec.md5}, got {actual}. The incomplete download was "
                f"deleted, not saved as {archive}.\nRun again to retry, or download the file "
                f"yourself and put it, or the {spec.folder}/ folder it contains, in {root}."
            )
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)
    return archive


def _load_cifar(
    name: str, spec: _CifarSpec, root_arg: str | Path | None, download: bool
) -> Dataset:
    root, origin = _resolve_root(root_arg)
    archive = root / spec.archive
    if not (root / spec.folder).is_dir():
        if not archive.is_file():
            if not download:
                reason = "downloading is turned off"
            else:
                try:
                    archive = _fetch_archive(spec, root)
                    reason = ""
                except (OSError, http.client.HTTPException) as exc:
                    reason = f"downloading it failed ({exc})"
            if reason:
                raise DataError(
                    f"{spec.title} not found: looked for the extracted folder {spec.folder}/ and "
                    f"the archive {spec.archive} in\n  {root}\n(the data root, {origin}), and "
                    f"{reason}.\nTo fix it, do one of:\n"
                    f"  - download {spec.url} (about {spec.size_mb} MB) and put it, or the "
                    f"{spec.folder}/ folder it contains, in {root};\n"
                    f"  - set {_ENV_VAR} (or pass --data-root) to a folder that already holds "
                    f"{spec.folder}/;\n"
                    "  - run again with network access (and downloading allowed) to fetch it "
                    "automatically."
                ) from None
        _extract(spec, root, archive)
    return _read_cifar_folder(name, spec, root)


# ---------------------------------------------------------------------------------------------
# npz


_NPZ_FORMAT = (
    "An npz dataset needs x_train and x_test (uint8, shape (N, H, W, C) with C = 1 or 3) and "
    "y_train and y_test (integer class labels 0..K-1, shape (N,)), e.g. "
    "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
)


def _load_npz(name: str, path_str: str) -> Dataset:
    if not path_str:
        raise DataError(f"Dataset {name!r} names no file. Use npz:<path>, e.g. npz:data/mine.npz.")
    path = Path(path_str).expanduser().absolute()

    def bad(what: str) -> DataError:
        return DataError(f"Invalid npz dataset {path}: {what}.\n{_NPZ_FORMAT}")

    if not path.is_file():
        raise DataError(
            f"npz dataset file not found: {path} (from {name!r}; relative paths are taken from "
            f"the current directory, {Path.cwd()}). Check the path.\n{_NPZ_FORMAT}"
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise bad("it holds a single array, not named arrays (use numpy.savez)")
        with z:
            for key in ("x_train", "y_train", "x_test", "y_test"):
                if key not in z.files:
                    raise bad(f"key '{key}' is missing (found keys: {sorted(z.files)})")
                try:
                    arrays[key] = z[key]
                except ValueError as exc:  # object arrays need pickle, which is refused
                    raise bad(f"key '{key}' cannot be read without pickle ({exc})") from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise bad(f"it is not a readable .npz file ({type(exc).__name__}: {exc})") from None

    xs, ys = {}, {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise bad(f"key 'x_{split}' has dtype {x.dtype}, expected uint8 (pixel values 0..255)")
        if x.ndim != 4 or x.shape[3] not in (1, 3):
            raise bad(f"key 'x_{split}' has shape {x.shape}, expected (N, H, W, C) with C = 1 or 3")
        if x.shape[0] < 1:
            raise bad(f"key 'x_{split}' holds no images")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise bad(
                f"key 'y_{split}' has dtype {y.dtype} and shape {y.shape}, expected integers of shape (N,)"
            )
        if len(y) != len(x):
            raise bad(f"key 'y_{split}' has {len(y)} labels but 'x_{split}' has {len(x)} images")
        if int(y.min()) < 0:
            raise bad(
                f"key 'y_{split}' has negative labels (found {int(y.min())}); labels must be 0..K-1"
            )
        xs[split], ys[split] = x, y
    if xs["train"].shape[1:] != xs["test"].shape[1:]:
        raise bad(
            f"'x_train' images are {xs['train'].shape[1:]} (H, W, C) but 'x_test' images are "
            f"{xs['test'].shape[1:]}"
        )
    k = max(int(ys["train"].max()), int(ys["test"].max())) + 1
    if k < 2:
        raise bad("all labels are 0; a classification dataset needs at least 2 classes")

    def to_nchw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    return Dataset(
        name=name,
        x_train=to_nchw(xs["train"]),
        y_train=torch.from_numpy(ys["train"].astype(np.int64)),
        x_test=to_nchw(xs["test"]),
        y_test=torch.from_numpy(ys["test"].astype(np.int64)),
        num_classes=k,
        classes=[str(i) for i in range(k)],
        source=str(path),
    )


# ---------------------------------------------------------------------------------------------


def load_dataset(name: str, root: str | Path | None = None, download: bool = True) -> Dataset:
    """Load ``"cifar10"``, ``"cifar100"`` or ``"npz:<path>"`` fully into memory (CPU tensors).

    CIFAR: looked for in :func:`resolve_data_root` ``(root)`` — extracted folder, else archive,
    else (if ``download``) the official download, MD5-checked. ``npz:<path>`` ignores ``root``;
    a relative path is taken from the current directory. Any problem raises
    :class:`~dainv.errors.DataError` with a message that says how to fix it.
    """
    if name.startswith("npz:"):
        return _load_npz(name, name[4:])
    key = name.lower()
    if key not in _SPECS:
        raise DataError(
            f"Unknown dataset {name!r}. Valid names: {', '.join(DATASETS)}, or npz:<path> for "
            "your own .npz file."
        )
    return _load_cifar(key, _SPECS[key], root, download)


def random_dataset(n_train: int, n_test: int, num_classes: int = 10, seed: int = 0) -> Dataset:
    """CIFAR-10-shaped random uint8 images and labels: no disk, for benchmarks and smoke tests
    (speed does not depend on pixel values)."""
    g = torch.Generator().manual_seed(seed)
    return Dataset(
        name="random-cifar10-shape",
        x_train=torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g),
        y_train=torch.randint(0, num_classes, (n_train,), generator=g),
        x_test=torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g),
        y_test=torch.randint(0, num_classes, (n_test,), generator=g),
        num_classes=num_classes,
        classes=[str(i) for i in range(num_classes)],
        source="random",
    )
