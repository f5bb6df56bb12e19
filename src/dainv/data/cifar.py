"""CIFAR-10/100 (python format) from the data root: the folder, else the archive (extracted
atomically), else a download (:func:`may_download`), MD5 checked; every file validated."""

from __future__ import annotations

import http.client
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dainv.data.core import ENV_VAR, Dataset, LoadOptions, default_data_root, resolve_root
from dainv.data.manifest import file_digest, verify_manifests
from dainv.errors import DataError


@dataclass(frozen=True)
class _CifarSpec:
    """Layout of one official CIFAR python archive; ``*_count`` = images per file (strict)."""

    title: str
    folder: str
    archive: str
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

    @property
    def url(self) -> str:
        return f"https://www.cs.toronto.edu/~kriz/{self.archive}"


_SPECS: dict[str, _CifarSpec] = {
    "cifar10": _CifarSpec(
        title="CIFAR-10", folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", size_mb=163,
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)), test_files=("test_batch",),
        meta_file="batches.meta", label_key="labels", names_key="label_names",
        num_classes=10, train_count=10000, test_count=10000,
    ),
    "cifar100": _CifarSpec(
        title="CIFAR-100", folder="cifar-100-python", archive="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85", size_mb=161,
        train_files=("train",), test_files=("test",),
        meta_file="meta", label_key="fine_labels", names_key="fine_label_names",
        num_classes=100, train_count=50000, test_count=10000,
    ),
}  # fmt: skip

# Globals a CIFAR pickle may reference: numpy's arrays; a crafted pickle from the internet must not run code.
_PICKLE_ALLOWED = {
    *((f"numpy.{core}.{module}", name) for core in ("core", "_core")
      for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}  # fmt: skip


class _CifarUnpickler(pickle.Unpickler):
    """``pickle.load(f, encoding="bytes")`` that refuses globals other than numpy arrays'."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``; raises ``OSError`` (``URLError``) on any network failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "dainv"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)


def _fix_hint(spec: _CifarSpec, root: Path) -> str:
    return (f"Delete the folder {root / spec.folder} and run again: dainv re-extracts {spec.archive} if it is in "
            f"{root}, else downloads {spec.url}. Or replace the file with the one from the official archive.")


def _bad_file(spec: _CifarSpec, root: Path, path: Path, what: str) -> DataError:
    return DataError(f"{spec.title} file {path} is not usable: {what}.\nIt is probably truncated or damaged. "
                     f"{_fix_hint(spec, root)}")  # fmt: skip


def _read_pickle(spec: _CifarSpec, root: Path, path: Path, keys: tuple[str, ...]) -> list[Any]:
    """The values of ``keys`` in one CIFAR pickle (a dict; py2 files have ``bytes`` keys)."""
    if not path.is_file():
        raise DataError(f"{spec.title} folder {root / spec.folder} is incomplete: {path.name} is missing (expected "
                        f"{path}).\n{_fix_hint(spec, root)}")  # fmt: skip
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DataError(f"Cannot read {spec.title} file {path}: {exc}. Check its permissions.") from None
    except Exception as exc:  # truncated / not a pickle: EOFError, UnpicklingError, ValueError...
        raise _bad_file(spec, root, path, f"it is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise _bad_file(spec, root, path, f"expected a dict, found {type(obj).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}
    for key in keys:
        if key not in d:
            raise _bad_file(spec, root, path, f"key '{key}' is missing (found keys: {sorted(d)})")
    return [d[key] for key in keys]


def _read_batch(spec: _CifarSpec, root: Path, path: Path, expected: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(data uint8 (n, 3, 32, 32), labels int64 (n,))`` of one batch file."""
    data, labels = _read_pickle(spec, root, path, ("data", spec.label_key))
    try:
        y = np.asarray(labels)
    except Exception:  # ragged or exotic content
        y = np.asarray([None])
    if not isinstance(data, np.ndarray):
        what = f"'data' is a {type(data).__name__}, expected a numpy array"
    elif data.dtype != np.uint8:
        what = f"'data' has dtype {data.dtype}, expected uint8"
    elif data.ndim != 2 or data.shape[1] != 3072:
        what = f"'data' has shape {data.shape}, expected (n, 3072)"
    elif len(data) != expected:
        what = f"it holds {len(data)} images, expected {expected}"
    elif y.ndim != 1 or y.dtype.kind not in "iu":
        what = f"'{spec.label_key}' is not a flat list of integers"
    elif len(y) != len(data):
        what = f"{len(y)} labels for {len(data)} images"
    elif y.min() < 0 or y.max() >= spec.num_classes:
        what = f"labels out of range: found {int(y.min() if y.min() < 0 else y.max())}, expected 0..{spec.num_classes - 1}"
    else:
        return data.reshape(-1, 3, 32, 32), y.astype(np.int64)
    raise _bad_file(spec, root, path, what)


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:  # pragma: no cover
    """Fallback for Pythons without extraction filters: plain files and folders inside ``dest``."""
    dest = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not (m.isfile() or m.isdir()) or (target != dest and dest not in target.parents):
            raise tarfile.TarError(f"unsafe member {m.name!r}")
    return tar.getmembers()


def _extract(spec: _CifarSpec, root: Path, archive: Path) -> None:
    """Extract into a temp folder in ``root``, then move it in place: never a half-written folder."""
    fix = f"Delete {archive} and run again to download it afresh ({spec.url}), or put the extracted {spec.folder}/ folder in {root}."
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.folder}.extract-"))
    except OSError as exc:
        raise DataError(f"Cannot extract {archive}: cannot write to {root} ({exc}). Extract it yourself (tar xzf "
                        f"{archive.name}) or set --data-root / {ENV_VAR} to a writable folder.") from None  # fmt: skip
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
                    tar.extractall(tmp, members=_safe_members(tar, tmp))
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise DataError(f"Cannot extract {spec.title} archive {archive}: {exc}.\n{fix}") from None
        if not (tmp / spec.folder).is_dir():
            raise DataError(f"{spec.title} archive {archive} does not contain a {spec.folder}/ folder.\n{fix}")
        try:
            os.replace(tmp / spec.folder, root / spec.folder)
        except OSError as exc:
            if not (root / spec.folder).is_dir():  # else: another process extracted it first
                raise DataError(f"Cannot move the extracted {spec.folder}/ into {root}: {exc}.\n{fix}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_archive(spec: _CifarSpec, root: Path) -> None:
    """Download the official archive into ``root`` (temp file + atomic rename) and check its MD5."""
    archive = root / spec.archive
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=root, prefix=f".{spec.archive}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        print(f"dainv: downloading {spec.url} (about {spec.size_mb} MB) into {root} ...", file=sys.stderr, flush=True)
        _download(spec.url, tmp)
        actual = file_digest(tmp, "md5")
        if actual != spec.md5:
            raise DataError(f"The downloaded {spec.title} archive {archive.name} (from {spec.url}) failed its MD5 "
                            f"check: expected {spec.md5}, got {actual}. The incomplete download was deleted, not "
                            f"saved as {archive}.\nRun again to retry, or download the file yourself and put it, "
                            f"or the {spec.folder}/ folder it contains, in {root}.")  # fmt: skip
        os.replace(tmp, archive)
    finally:
        tmp.unlink(missing_ok=True)


def may_download(root: Path, download: bool | None) -> str:
    """``""`` when an archive may be fetched into ``root``, else why not: ``True`` any folder,
    ``None`` only the default one (a mistyped ``--data-root`` gets no 163 MB download)."""
    if download is None:
        default = default_data_root().absolute()
        if Path(root).absolute() == default:
            return ""
        return (f"it was not downloaded: dainv downloads by itself only into the default data folder "
                f"{default}. Check the path (a typo?), or pass --download (Python: download=True) to "
                "fetch it into this folder")  # fmt: skip
    return "" if download else "downloading is turned off"


def load_cifar(name: str, path: str, o: LoadOptions) -> Dataset:
    """``cifar10`` or ``cifar100`` (``name``) from the data root ``o.root`` (see the module)."""
    spec = _SPECS[name]
    root, origin = resolve_root(o.root)
    archive = root / spec.archive
    if not (root / spec.folder).is_dir():
        if not archive.is_file():
            reason = may_download(root, o.download)
            if not reason:
                try:
                    _fetch_archive(spec, root)
                except (OSError, http.client.HTTPException) as exc:
                    reason = f"downloading it failed ({exc})"
            if reason:
                raise DataError(f"{spec.title} not found: looked for the extracted folder {spec.folder}/ and the "
                                f"archive {spec.archive} in\n  {root}\n(the data root, {origin}), and "
                                f"{reason}.\nTo fix it, do one of:\n  - download {spec.url} (about {spec.size_mb} "
                                f"MB) and put it, or the {spec.folder}/ folder it contains, in {root};\n  - set "
                                f"{ENV_VAR} (or pass --data-root) to a folder that already holds {spec.folder}/;\n "
                                " - run again with network access and --download to fetch it into that folder "
                                "automatically.") from None  # fmt: skip
        _extract(spec, root, archive)
    notes = verify_manifests(root / spec.folder, _fix_hint(spec, root))
    folder = root / spec.folder
    (names,) = _read_pickle(spec, root, folder / spec.meta_file, (spec.names_key,))
    if not isinstance(names, (list, tuple)) or len(names) != spec.num_classes or not all(isinstance(s, (bytes, str)) for s in names):
        raise _bad_file(spec, root, folder / spec.meta_file, f"'{spec.names_key}' is not a list of {spec.num_classes} names")
    tensors = []
    for files, count in ((spec.train_files, spec.train_count), (spec.test_files, spec.test_count)):
        parts = [_read_batch(spec, root, folder / f, count) for f in files]
        x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else np.ascontiguousarray(parts[0][0])
        tensors += [torch.from_numpy(x), torch.from_numpy(np.concatenate([p[1] for p in parts]))]
    classes = [s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names]
    return Dataset(name, *tensors, spec.num_classes, classes, str(folder), notes=notes)
