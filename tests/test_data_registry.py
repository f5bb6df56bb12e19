"""The data-set registry, checksum manifests (issue 13) and label bounds (issue 13, F5)."""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dainv import data
from dainv.data import (
    MAX_CLASSES,
    Dataset,
    DatasetSpecError,
    check_dataset_spec,
    cifar,
    dataset_kinds,
    load_dataset,
    register_dataset,
)
from dainv.errors import DataError

N_FAKE = 10


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DAINV_VERIFY", raising=False)

    def fail(url: str, dest: Path) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(cifar, "_download", fail)


# ---------------------------------------------------------------------------------------------
# Registry


def test_builtin_kinds() -> None:
    assert dataset_kinds() == ("cifar10", "cifar100", "npz:PATH", "folder:PATH", "tinyimagenet:PATH")


@pytest.mark.parametrize(
    "spec", ["cifar10", "cifar100", "CIFAR10", "npz:a.npz", "folder:/x/y", "tinyimagenet:t"]
)
def test_check_dataset_spec_accepts(spec: str) -> None:
    assert check_dataset_spec(spec) is None


@pytest.mark.parametrize(
    ("spec", "detail"),
    [
        ("mnist", "Unknown dataset 'mnist'"),
        ("imagefolder:x", "Unknown dataset"),
        ("", "non-empty string"),
        (None, "non-empty string"),
        (3, "non-empty string"),
        ("npz:", "names no file"),
        ("folder:  ", "names no file"),
        ("tinyimagenet:", "names no file"),
        ("cifar10:/data", "takes no path"),
    ],
)
def test_check_dataset_spec_rejects(spec: object, detail: str) -> None:
    with pytest.raises(ValueError, match=detail) as err:
        check_dataset_spec(spec)
    assert isinstance(err.value, DataError) and isinstance(err.value, DatasetSpecError)
    if "Unknown" in detail or "non-empty" in detail:
        for usage in dataset_kinds():  # the message lists every kind
            assert usage in str(err.value)


def test_load_dataset_uses_the_same_table() -> None:
    with pytest.raises(DataError, match="Unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(DataError, match="takes no path"):
        load_dataset("cifar100:somewhere")


def test_register_dataset_is_one_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data.registry, "REGISTRY", dict(data.registry.REGISTRY))
    seen = {}

    def load(spec: str, path: str, options) -> Dataset:
        seen.update(spec=spec, path=path, image_size=options.image_size)
        return data.random_dataset(4, 2, num_classes=2)

    register_dataset("toy", load, takes_path=True, help="a toy data set")
    check_dataset_spec("toy:abc")
    assert "toy:PATH" in dataset_kinds()
    ds = load_dataset("toy:abc", image_size=32)
    assert seen == {"spec": "toy:abc", "path": "abc", "image_size": 32}
    assert ds.num_classes == 2
    with pytest.raises(ValueError, match="lower-case"):
        register_dataset("Bad Name", load, takes_path=False, help="")


# ---------------------------------------------------------------------------------------------
# Checksum manifests next to the CIFAR folder


def _fake_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"labels": [int(v) for v in rng.integers(0, 10, N_FAKE)],
            b"data": rng.integers(0, 256, (N_FAKE, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def _write_manifest(folder: Path, algo: str = "sha256") -> Path:
    lines = []
    for f in sorted(folder.iterdir()):
        digest = hashlib.new(algo, f.read_bytes()).hexdigest()
        lines.append(f"{digest}  {folder.name}/{f.name}\n")
    manifest = folder.with_name(folder.name + "." + algo)
    manifest.write_text("".join(lines))
    return manifest


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = replace(cifar._SPECS["cifar10"], train_count=N_FAKE, test_count=N_FAKE)
    monkeypatch.setitem(cifar._SPECS, "cifar10", spec)


def _flip_byte(path: Path, offset: int = 200) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_manifest_catches_a_flipped_byte(tmp_path: Path, small_counts: None, algo: str) -> None:
    folder = _fake_cifar10(tmp_path / "root")
    manifest = _write_manifest(folder, algo)
    ds = load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert any("7 file(s)" in n and manifest.name in n for n in ds.notes)
    # a byte inside the pixel data: the pickle still loads, only the checksum can tell
    _flip_byte(folder / "data_batch_3", offset=(folder / "data_batch_3").stat().st_size - 100)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path / "root", download=False)
    msg = str(err.value)
    assert str(folder / "data_batch_3") in msg and manifest.name in msg
    assert f"does not match its {algo} checksum" in msg
    assert "Delete the folder" in msg and "cifar-10-python.tar.gz" in msg  # how to fix it
    assert err.value.__cause__ is None


def test_manifest_verification_is_cached(
    tmp_path: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _fake_cifar10(tmp_path / "root")
    _write_manifest(folder)
    hashed = []
    real = data.manifest.file_digest
    monkeypatch.setattr(data.manifest, "file_digest", lambda p, a: hashed.append(p) or real(p, a))
    load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert len(hashed) == 7
    ds = load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert len(hashed) == 7, "unchanged files must not be hashed again"
    assert any("unchanged since their last verification" in n for n in ds.notes)
    cache = tmp_path / "xdg" / "dainv" / "cache" / "verified.json"
    assert len(json.loads(cache.read_text())) == 7
    # a changed file (new size and mtime) is hashed again, and caught
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="test_batch does not match"):
        load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert hashed[-1] == path
    # DAINV_VERIFY=off skips the check (the padded pickle still loads)
    monkeypatch.setenv("DAINV_VERIFY", "off")
    load_dataset("cifar10", root=tmp_path / "root", download=False)


def test_manifest_problems_are_named(tmp_path: Path, small_counts: None) -> None:
    folder = _fake_cifar10(tmp_path / "root")
    manifest = _write_manifest(folder)
    (folder / "data_batch_1").unlink()
    with pytest.raises(DataError, match="listed in the checksum manifest") as err:
        load_dataset("cifar10", root=tmp_path / "root", download=False)
    assert str(folder / "data_batch_1") in str(err.value)
    manifest.write_text("nonsense line\n")
    with pytest.raises(DataError, match="line 1, is not a sha256sum line"):
        load_dataset("cifar10", root=tmp_path / "root", download=False)


def test_real_cifar_manifest_format_is_understood() -> None:
    manifest = Path("/work/shared/data/cifar-10-batches-py.sha256")
    if not manifest.is_file():
        pytest.skip("shared CIFAR manifest not present")
    entries = data.manifest._parse(manifest, "")
    assert len(entries) == 7 and all(p.parent.name == "cifar-10-batches-py" for _, p in entries)


def test_npz_manifest(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **_npz(np.array([0, 1, 0, 1]), np.array([1, 0])))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "d.npz.sha256").write_text(f"{digest}  d.npz\n")
    load_dataset(f"npz:{path}")
    _flip_byte(path, offset=path.stat().st_size // 2)
    with pytest.raises(DataError, match="d.npz does not match its sha256 checksum"):
        load_dataset(f"npz:{path}")


# ---------------------------------------------------------------------------------------------
# F5: labels


def _npz(y_train: np.ndarray, y_test: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((len(y_train), 4, 4, 3), np.uint8),
        "y_train": y_train,
        "x_test": np.zeros((len(y_test), 4, 4, 3), np.uint8),
        "y_test": y_test,
    }


LABEL_FAULTS = {
    "million": (np.array([0, 1, 2, 1_000_000]), np.array([0, 1]), "1,000,001 classes"),
    "uint64-2**63": (np.array([0, 1, 2**63, 1], np.uint64), np.array([0, 1], np.uint64), "at most 100,000"),
    "uint64-max": (np.array([0, 1, 2**64 - 1], np.uint64), np.array([0], np.uint64), "at most 100,000"),
    "more-classes-than-images": (np.array([0, 1, 7]), np.array([0, 1]), "only 3 training images"),
    "gap": (np.array([0, 2, 0, 2, 3]), np.array([0, 1]), "1 of the 4 classes 0..3 have no training image (labels 1)"),
    "test-only-class": (np.array([0, 1, 0, 1]), np.array([2, 0]), "labels 2)"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(LABEL_FAULTS))
def test_npz_label_bounds(tmp_path: Path, fault: str) -> None:
    y_train, y_test, detail = LABEL_FAULTS[fault]
    path = tmp_path / "labels.npz"
    np.savez(path, **_npz(y_train, y_test))
    with pytest.raises(DataError) as err:
        load_dataset(f"npz:{path}")
    msg = str(err.value)
    assert detail in msg and str(path) in msg and "0..C-1" in msg


def test_missing_classes_allowed_on_request(tmp_path: Path) -> None:
    path = tmp_path / "gap.npz"
    np.savez(path, **_npz(np.array([0, 2, 0, 2, 3]), np.array([0, 1])))
    ds = load_dataset(f"npz:{path}", allow_missing_classes=True)
    assert ds.num_classes == 4 and ds.y_train.dtype == torch.int64
    # the upper bound holds even then
    np.savez(path, **_npz(np.array([0, 1, 10**6]), np.array([0])))
    with pytest.raises(DataError, match="at most 100,000"):
        load_dataset(f"npz:{path}", allow_missing_classes=True)


def test_check_labels_bounds_directly() -> None:
    y = np.arange(MAX_CLASSES + 1, dtype=np.int64)
    with pytest.raises(DataError, match="at most 100,000"):
        data.check_labels(y, y[:1], where="x")
    assert data.check_labels(np.array([1, 0, 1], np.uint8), np.array([0], np.uint8), where="x") == 2


def test_image_size_is_not_silently_ignored(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **_npz(np.array([0, 1, 0, 1]), np.array([1, 0])))
    assert load_dataset(f"npz:{path}", image_size=4).image_shape == (3, 4, 4)  # its own size
    with pytest.raises(DataError, match="are not resized"):
        load_dataset(f"npz:{path}", image_size=8)
