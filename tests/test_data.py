"""Tests for dainv.data: the real CIFAR-10 files, fake CIFAR folders/archives, npz files.

Network is never used: the downloader is monkeypatched wherever download=True is exercised.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import tarfile
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from dainv.data import (
    Dataset,
    cifar,
    dataset_kinds,
    default_data_root,
    images_to_float,
    load_dataset,
    resolve_data_root,
)
from dainv.errors import DainvError, DataError

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
N_FAKE = 10  # images per fake batch file


def _no_chain(exc: BaseException) -> bool:
    """True if the traceback shows no 'During handling of the above exception' chain."""
    return exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


# ---------------------------------------------------------------------------------------------
# Real CIFAR-10 (conftest's session fixture `cifar10`: these tests are marked slow)


def test_real_cifar10_shapes_and_types(cifar10: Dataset) -> None:
    assert cifar10.name == "cifar10"
    assert cifar10.x_train.shape == (50000, 3, 32, 32)
    assert cifar10.x_test.shape == (10000, 3, 32, 32)
    assert cifar10.y_train.shape == (50000,) and cifar10.y_test.shape == (10000,)
    assert cifar10.x_train.dtype == torch.uint8 and cifar10.x_test.dtype == torch.uint8
    assert cifar10.y_train.dtype == torch.int64 and cifar10.y_test.dtype == torch.int64
    assert cifar10.x_train.is_contiguous() and cifar10.x_test.is_contiguous()
    assert cifar10.num_classes == 10
    assert cifar10.classes == CIFAR10_NAMES
    assert cifar10.image_shape == (3, 32, 32)
    assert cifar10.source.endswith("cifar-10-batches-py")


def test_real_cifar10_class_counts(cifar10: Dataset) -> None:
    assert torch.bincount(cifar10.y_train, minlength=10).tolist() == [5000] * 10
    assert torch.bincount(cifar10.y_test, minlength=10).tolist() == [1000] * 10
    # data_batch_1 alone: the well-known official per-class counts
    first = torch.bincount(cifar10.y_train[:10000], minlength=10).tolist()
    assert first == [1005, 974, 1032, 1016, 999, 937, 1030, 1001, 1025, 981]


def test_real_cifar10_known_values(cifar10: Dataset) -> None:
    # Values published in the data README: R plane first, B plane last.
    assert cifar10.x_train[0, 0, 0, :3].tolist() == [59, 43, 50]
    assert cifar10.x_train[0].flatten()[-3:].tolist() == [140, 84, 72]
    assert cifar10.x_train[1].flatten()[:3].tolist() == [154, 126, 105]
    assert cifar10.x_test[0, 0].flatten()[:5].tolist() == [158, 159, 165, 166, 160]
    # frog, truck, truck, deer, automobile / cat, ship, ship, airplane
    assert cifar10.y_train[:5].tolist() == [6, 9, 9, 4, 1]
    assert cifar10.y_test[:4].tolist() == [3, 8, 8, 0]


def test_real_cifar10_content_hashes(cifar10: Dataset) -> None:
    # The (N, 3, 32, 32) layout is the raw (N, 3072) rows, so the README's hashes apply as-is.
    test_hash = hashlib.sha256(cifar10.x_test.numpy().tobytes()).hexdigest()
    assert test_hash == "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56"
    train_hash = hashlib.sha256(cifar10.x_train.numpy().tobytes()).hexdigest()
    assert train_hash == "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111"


def test_real_cifar10_channel_means(cifar10: Dataset) -> None:
    sums = cifar10.x_train.numpy().sum(axis=(0, 2, 3), dtype=np.int64)
    mean = sums / (50000 * 32 * 32 * 255)
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-4)


def test_real_cifar10_subset_and_float(cifar10: Dataset) -> None:
    small = cifar10.subset(100, 20)
    assert small.x_train.shape == (100, 3, 32, 32) and small.y_test.shape == (20,)
    assert torch.equal(small.x_train, cifar10.x_train[:100])
    x = images_to_float(small.x_test)
    assert x.dtype == torch.float32
    assert torch.allclose(x * 255, cifar10.x_test[:20].float())


# ---------------------------------------------------------------------------------------------
# Data root


def test_resolve_data_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DAINV_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("DAINV_DATA")
    assert resolve_data_root(None) == tmp_path / "xdg" / "dainv"
    assert default_data_root() == tmp_path / "xdg" / "dainv"


def test_default_data_root_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_root() == tmp_path / ".cache" / "dainv"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/not/allowed")  # XDG: relative paths ignored
    assert default_data_root() == tmp_path / ".cache" / "dainv"


# ---------------------------------------------------------------------------------------------
# Fake CIFAR folders


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let fake batch files hold N_FAKE images instead of the real 10000/50000."""
    for key in ("cifar10", "cifar100"):
        spec = replace(cifar._SPECS[key], train_count=N_FAKE, test_count=N_FAKE)
        monkeypatch.setitem(cifar._SPECS, key, spec)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(url: str, dest: Path) -> None:
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(cifar, "_download", fail)


def _encode(d: dict, str_keys: bool) -> dict:
    if str_keys:
        return d
    return {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in d.items()}


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _batch(rng: np.random.Generator, label_key: str, num_classes: int, str_keys: bool) -> dict:
    d = {
        "batch_label": "fake batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, N_FAKE)],
        "data": rng.integers(0, 256, (N_FAKE, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(N_FAKE)],
    }
    return _encode(d, str_keys)


def _write_cifar10(root: Path, str_keys: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """A cifar-10-batches-py/ folder of N_FAKE-image batches; returns the expected arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _batch(rng, "labels", 10, str_keys)
        _dump(folder / name, batches[name])
    meta = {"num_cases_per_batch": N_FAKE, "label_names": CIFAR10_NAMES, "num_vis": 3072}
    meta = _encode(meta, str_keys)
    if not str_keys:
        meta[b"label_names"] = [s.encode() for s in CIFAR10_NAMES]
    _dump(folder / "batches.meta", meta)
    k_data, k_labels = ("data", "labels") if str_keys else (b"data", b"labels")
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "x_train": np.concatenate([b[k_data] for b in train]).reshape(-1, 3, 32, 32),
        "y_train": np.concatenate([b[k_labels] for b in train]),
        "x_test": batches["test_batch"][k_data].reshape(-1, 3, 32, 32),
        "y_test": np.asarray(batches["test_batch"][k_labels]),
    }


@pytest.mark.parametrize("str_keys", [False, True], ids=["bytes-keys", "str-keys"])
def test_fake_cifar10_folder_is_read(tmp_path: Path, small_counts: None, str_keys: bool) -> None:
    want = _write_cifar10(tmp_path, str_keys=str_keys)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.x_train.shape == (5 * N_FAKE, 3, 32, 32) and ds.x_test.shape == (N_FAKE, 3, 32, 32)
    for key, arr in want.items():
        assert np.array_equal(getattr(ds, key).numpy(), arr), key
    assert ds.y_train.dtype == torch.int64 and ds.x_train.is_contiguous()
    assert ds.classes == CIFAR10_NAMES
    assert ds.source == str(tmp_path / "cifar-10-batches-py")


def test_root_from_env_var(tmp_path: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch):
    _write_cifar10(tmp_path)
    monkeypatch.setenv("DAINV_DATA", str(tmp_path))
    assert load_dataset("cifar10", download=False).x_test.shape[0] == N_FAKE


def test_counts_are_strict_for_real_sizes(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # no small_counts: the real spec expects 10000 per batch
    with pytest.raises(DataError, match="expected 10000") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert "data_batch_1" in str(err.value)


def test_fake_cifar100_folder_is_read(tmp_path: Path, small_counts: None) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in ("train", "test"):
        b = _batch(rng, "fine_labels", 100, str_keys=False)
        b[b"coarse_labels"] = [int(v) // 5 for v in b[b"fine_labels"]]
        batches[name] = b
        _dump(folder / name, b)
    names = [f"class{i}".encode() for i in range(100)]
    _dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    ds = load_dataset("cifar100", root=tmp_path, download=False)
    assert ds.num_classes == 100 and ds.classes[:2] == ["class0", "class1"]
    assert ds.y_train.tolist() == batches["train"][b"fine_labels"]
    assert np.array_equal(ds.x_test.numpy().reshape(N_FAKE, -1), batches["test"][b"data"])


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def _rewrite(path: Path, change) -> None:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    change(d)
    _dump(path, d)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


CORRUPTIONS = {
    "truncated": (_truncate, "not a readable pickle"),
    "random-bytes": (_random_bytes, "not a readable pickle"),
    "missing-file": (lambda p: p.unlink(), "is missing"),
    "not-a-dict": (lambda p: _dump(p, [1, 2, 3]), "expected a dict"),
    "code-in-pickle": (lambda p: _dump(p, {b"data": _Evil()}), "refusing to load global"),
    "wrong-shape": (
        lambda p: _rewrite(p, lambda d: d.update({b"data": d[b"data"][:, :3000].copy()})),
        "(10, 3000)",
    ),
    "float-data": (
        lambda p: _rewrite(p, lambda d: d.update({b"data": d[b"data"].astype(np.float32)})),
        "dtype float32",
    ),
    "labels-out-of-range": (
        lambda p: _rewrite(p, lambda d: d[b"labels"].__setitem__(3, 10)),
        "labels out of range: found 10, expected 0..9",
    ),
    "negative-label": (
        lambda p: _rewrite(p, lambda d: d[b"labels"].__setitem__(0, -1)),
        "labels out of range: found -1",
    ),
    "too-few-labels": (lambda p: _rewrite(p, lambda d: d[b"labels"].pop()), "9 labels for 10"),
    "missing-data-key": (lambda p: _rewrite(p, lambda d: d.pop(b"data")), "'data' is missing"),
    "missing-labels-key": (
        lambda p: _rewrite(p, lambda d: d.pop(b"labels")),
        "'labels' is missing",
    ),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("file", ["data_batch_3", "test_batch"])
def test_corrupt_batch_files(tmp_path: Path, small_counts: None, kind: str, file: str) -> None:
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / file
    corrupt, detail = CORRUPTIONS[kind]
    corrupt(path)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert str(path) in msg
    assert detail in msg
    assert "Delete the folder" in msg and "cifar-10-python.tar.gz" in msg  # the fix
    assert _no_chain(err.value)


def test_corrupt_meta_file(tmp_path: Path, small_counts: None) -> None:
    _write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    _dump(meta, {b"label_names": [b"a", b"b"]})
    with pytest.raises(DataError, match="not a list of 10 names") as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(meta) in str(err.value)


# ---------------------------------------------------------------------------------------------
# Missing data, download, archives


def _assert_not_found_message(msg: str, root: Path) -> None:
    assert "cifar-10-batches-py" in msg and "cifar-10-python.tar.gz" in msg
    assert str(root) in msg
    assert "DAINV_DATA" in msg and "--data-root" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg


def test_missing_without_download(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=root, download=False)
    msg = str(err.value)
    _assert_not_found_message(msg, root)
    assert "given explicitly" in msg and "turned off" in msg
    assert not root.exists()  # nothing created when not downloading


def test_missing_default_root_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAINV_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", download=False)
    _assert_not_found_message(str(err.value), tmp_path / "dainv")
    assert "the default" in str(err.value)


def test_missing_with_failing_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def offline(url: str, dest: Path) -> None:
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "_download", offline)
    monkeypatch.setenv("DAINV_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", download=True)  # a root other than the default: only when asked
    msg = str(err.value)
    _assert_not_found_message(msg, tmp_path)
    assert "DAINV_DATA environment variable" in msg and "name resolution" in msg
    assert _no_chain(err.value)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert list(tmp_path.iterdir()) == []  # the temp file was removed


def _make_archive(tmp_path: Path, dest: Path, extra: tarfile.TarInfo | None = None) -> dict:
    src = tmp_path / "archive-src"
    want = _write_cifar10(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    shutil.rmtree(src)
    return want


def test_archive_in_root_is_extracted(tmp_path: Path, small_counts: None) -> None:
    root = tmp_path / "root"
    want = _make_archive(tmp_path, root / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10", root=root, download=False)
    assert np.array_equal(ds.x_train.numpy(), want["x_train"])
    assert np.array_equal(ds.y_test.numpy(), want["y_test"])
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert sorted(p.name for p in root.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]  # no temp folders left


def test_unsafe_archive_is_refused(tmp_path: Path, small_counts: None) -> None:
    root = tmp_path / "root"
    evil = tarfile.TarInfo("../escaped.txt")
    evil.size = 3
    _make_archive(tmp_path, root / "cifar-10-python.tar.gz", extra=evil)
    with pytest.raises(DataError, match="Cannot extract") as err:
        load_dataset("cifar10", root=root, download=False)
    assert "cifar-10-python.tar.gz" in str(err.value)
    assert not (tmp_path / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "cifar-10-batches-py").exists()


def test_junk_archive(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball at all" * 10)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-python.tar.gz") in msg and "Delete" in msg


def test_archive_without_folder(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    info = tarfile.TarInfo("something-else.txt")
    info.size = 1
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="does not contain a cifar-10-batches-py/ folder"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_download_verifies_and_extracts(
    tmp_path: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = tmp_path / "prepared.tar.gz"
    want = _make_archive(tmp_path, prepared)
    md5 = hashlib.md5(prepared.read_bytes()).hexdigest()
    monkeypatch.setitem(cifar._SPECS, "cifar10", replace(cifar._SPECS["cifar10"], md5=md5))
    monkeypatch.setattr(cifar, "_download", lambda url, dest: shutil.copyfile(prepared, dest))
    root = tmp_path / "new" / "root"  # created on demand
    ds = load_dataset("cifar10", root=root, download=True)
    assert np.array_equal(ds.x_test.numpy(), want["x_test"])
    assert sorted(p.name for p in root.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]


def test_download_md5_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    junk = b"<html>captive portal</html>"
    monkeypatch.setattr(cifar, "_download", lambda url, dest: Path(dest).write_bytes(junk))
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=tmp_path, download=True)
    msg = str(err.value)
    assert "MD5" in msg and "cifar-10-python.tar.gz" in msg
    assert "c58f30108f718f92721af3b95e74349a" in msg
    assert hashlib.md5(junk).hexdigest() in msg
    assert list(tmp_path.iterdir()) == []  # neither the archive nor a temp file is left


def test_unknown_dataset() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist")
    msg = str(err.value)
    assert "mnist" in msg and all(name in msg for name in dataset_kinds()) and "npz:" in msg
    assert isinstance(err.value, DainvError)


# ---------------------------------------------------------------------------------------------
# npz


def _npz_arrays(c: int = 3, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        "x_train": rng.integers(0, 256, (n_train, 5, 7, c), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 0, 1, 2][:n_train], dtype=np.int32),
        "x_test": rng.integers(0, 256, (n_test, 5, 7, c), dtype=np.uint8),
        "y_test": np.array([4, 0, 1, 2][:n_test], dtype=np.uint8),
    }


@pytest.mark.parametrize("c", [1, 3])
def test_npz_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, c: int) -> None:
    arrays = _npz_arrays(c)
    np.savez(tmp_path / "mine.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    # y_test has labels 3 and 4, which y_train lacks: refused unless asked for (issue 13, F5)
    with pytest.raises(DataError, match="2 of the 5 classes"):
        load_dataset("npz:mine.npz")
    ds = load_dataset("npz:mine.npz", root="/ignored/root", allow_missing_classes=True)
    assert ds.name == "npz:mine.npz" and ds.source == str(tmp_path / "mine.npz")
    assert ds.x_train.shape == (6, c, 5, 7) and ds.image_shape == (c, 5, 7)
    assert ds.x_train.is_contiguous() and ds.x_test.is_contiguous()
    assert np.array_equal(ds.x_train.numpy(), arrays["x_train"].transpose(0, 3, 1, 2))
    assert np.array_equal(ds.x_test.numpy(), arrays["x_test"].transpose(0, 3, 1, 2))
    assert ds.y_train.dtype == torch.int64 and ds.y_test.tolist() == [4, 0, 1, 2]
    assert ds.num_classes == 5 and ds.classes == ["0", "1", "2", "3", "4"]


def _drop(key):
    return lambda a: a.pop(key)


NPZ_ERRORS = {
    "missing-key": (_drop("y_test"), "'y_test' is missing"),
    "float-x": (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "'x_train' has dtype float32"),
    "x-ndim": (lambda a: a.update(x_test=a["x_test"][..., 0]), "'x_test' has shape (4, 5, 7)"),
    "two-channels": (lambda a: a.update(x_train=a["x_train"][..., :2]), "C = 1 or 3"),
    "float-y": (lambda a: a.update(y_train=a["y_train"].astype(np.float64)), "'y_train' has dtype float64"),
    "length-mismatch": (lambda a: a.update(y_train=a["y_train"][:5]), "5 labels but 'x_train' has 6"),
    "negative-label": (lambda a: a.update(y_test=np.array([-1, 0, 1, 2])), "negative labels"),
    "single-class": (lambda a: a.update(y_train=np.zeros(6, int), y_test=np.zeros(4, int)), "at least 2 classes"),
    "image-size-mismatch": (lambda a: a.update(x_test=a["x_test"][:, :4]), "'x_test' images are (4, 7, 3)"),
    "empty": (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]), "'x_test' holds no images"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(NPZ_ERRORS))
def test_npz_errors(tmp_path: Path, kind: str) -> None:
    arrays = _npz_arrays()
    change, detail = NPZ_ERRORS[kind]
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        load_dataset(f"npz:{path}")
    msg = str(err.value)
    assert str(path) in msg and detail in msg
    assert "numpy.savez" in msg  # the hint on the expected format


def test_npz_missing_file_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as err:
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    assert str(tmp_path / "absent.npz") in str(err.value)

    (tmp_path / "junk.npz").write_bytes(b"junk" * 100)
    with pytest.raises(DataError, match="not a readable .npz") as err:
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")

    arrays = _npz_arrays()
    arrays["y_train"] = np.array([0, 1, 2, 0, 1, "x"], dtype=object)
    np.savez(tmp_path / "objects.npz", **arrays)
    with pytest.raises(DataError, match="'y_train' cannot be read without pickle"):
        load_dataset(f"npz:{tmp_path / 'objects.npz'}")

    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single array"):
        load_dataset(f"npz:{tmp_path / 'single.npy'}")

    with pytest.raises(DataError, match="names no file"):
        load_dataset("npz:")


# ---------------------------------------------------------------------------------------------
# Dataset helpers


def _tiny() -> Dataset:
    x = torch.arange(5 * 3 * 2 * 2, dtype=torch.uint8).reshape(5, 3, 2, 2)
    y = torch.tensor([0, 1, 0, 1, 1])
    return Dataset("tiny", x, y, x[:3].clone(), y[:3].clone(), 2, ["0", "1"], "/nowhere")


def test_subset() -> None:
    ds = _tiny()
    sub = ds.subset(2, None)
    assert sub.x_train.shape[0] == 2 and torch.equal(sub.x_train, ds.x_train[:2])
    assert sub.y_train.tolist() == [0, 1]
    assert sub.x_test.shape[0] == 3 and sub.num_classes == 2 and sub.name == "tiny"
    assert ds.x_train.shape[0] == 5  # original untouched
    assert ds.subset(None, 1).y_test.tolist() == [0]
    assert ds.subset(5, 3).x_train.shape[0] == 5
    for n_train, n_test, text in [(6, None, "has 5"), (0, None, "1 to 5"), (None, 4, "has 3")]:
        with pytest.raises(DataError, match=text):
            ds.subset(n_train, n_test)


def test_to_device_and_repr() -> None:
    ds = _tiny()
    moved = ds.to("cpu")
    assert moved is not ds and moved.x_train.device.type == "cpu"
    assert torch.equal(moved.y_test, ds.y_test) and moved.classes == ds.classes
    to = moved.to(torch.device("meta"))
    assert {t.device.type for t in (to.x_train, to.y_train, to.x_test, to.y_test)} == {"meta"}
    assert "tiny" in repr(ds) and "(5, 3, 2, 2)" in repr(ds) and "tensor(" not in repr(ds)


def test_images_to_float() -> None:
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    f = images_to_float(x)
    assert f.dtype == torch.float32 and f.device == x.device
    assert torch.allclose(f, torch.tensor([[0.0, 0.2, 1.0]]))
    assert x.tolist() == [[0, 51, 255]]  # input untouched
    with pytest.raises(TypeError):
        images_to_float(f)
