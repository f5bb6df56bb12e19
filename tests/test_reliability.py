"""Reliability (issue #6) through the real CLI: bad input, crashes, numerical faults, two writers.

Every user error exits with status 2 and one ``dainv: error: ...`` message (what, where, how to
fix it) and no traceback unless ``--debug``. A training process killed with SIGKILL at any
moment leaves a run folder that ``--resume`` finishes with bitwise the same weights (CPU, fp32)
and a ``metrics.jsonl`` holding epochs 1..N exactly. Runs are tiny (conftest's tiny_overrides),
on synthetic data; real processes are started only where a real process is the point (signals,
the lock, --debug).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dainv import cli, runio
from dainv.data import cifar
from dainv.errors import ConfigError, RunError

EPOCHS = 2
# The tiny run, halved once more for the runs that train: 2 steps of 8 seeds × 8 views per epoch.
SMALL = [f"train.epochs={EPOCHS}", "data.n_train=128", "data.n_test=64", "train.batch_size=64"]
N_FAKE = 10  # images per fake CIFAR batch file


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


def _user_error(rc: int, text: str, *needles: str) -> None:
    assert rc == 2, text
    assert "dainv: error: " in text and "Traceback" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"


@pytest.fixture(scope="module")
def sets(tiny_overrides) -> list[str]:
    """The tiny run's settings as --set options."""
    return [a for kv in tiny_overrides for a in ("--set", kv)]


@pytest.fixture(scope="module")
def train_args(sets):
    """``train_args(npz, out, *extra)``: the arguments of ``dainv train`` for a small DAI run of
    the npz data set into ``out``."""

    def args(npz: Path, out: Path, *extra: str) -> list[str]:
        small = [a for kv in SMALL for a in ("--set", kv)]
        return ["train", "--quiet", "--arm", "dai", "--out", str(out), *sets, *small,
                "--set", f"data.dataset=npz:{npz}", *extra]  # fmt: skip

    return args


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _epochs(run: Path) -> list[int]:
    return [r["epoch"] for r in runio.read_metrics(run / "metrics.jsonl")]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"tensors differ: {bad}"


# ---------------------------------------------------------------------------------------------
# Fixtures: a synthetic CIFAR-shaped npz data set (the runs use its first 128/64 images) and a
# reference run of it, uninterrupted.


@pytest.fixture(scope="module")
def npz(random_npz) -> Path:
    return random_npz


@pytest.fixture(scope="module")
def reference(tmp_path_factory, npz, tiny) -> Path:
    from dainv.train import train

    run = tmp_path_factory.mktemp("ref") / "run"
    train(tiny("dai", *SMALL, f"data.dataset=npz:{npz}"), run, quiet=True)
    assert _epochs(run) == list(range(1, EPOCHS + 1))
    return run


def _assert_matches_reference(run: Path, reference: Path) -> None:
    _assert_same_weights(
        _weights(reference / "checkpoints/final.pt"), _weights(run / "checkpoints/final.pt")
    )
    assert _epochs(run) == list(range(1, EPOCHS + 1))
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"
    assert not list(run.glob("**/.*.tmp")), "temp files left behind"


# ---------------------------------------------------------------------------------------------
# Bad data


@pytest.fixture
def small_counts(monkeypatch):
    """Fake CIFAR batch files hold N_FAKE images instead of 10000."""
    spec = replace(cifar._SPECS["cifar10"], train_count=N_FAKE, test_count=N_FAKE)
    monkeypatch.setitem(cifar._SPECS, "cifar10", spec)


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


def _edit_batch(path: Path, change) -> None:
    d = pickle.loads(path.read_bytes(), encoding="bytes")
    change(d)
    path.write_bytes(pickle.dumps(d, protocol=2))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


CIFAR_FAULTS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:5000]), "not a readable pickle"),
    "unpicklable": (lambda p: p.write_bytes(pickle.dumps({b"data": _Evil()})), "refusing to load global"),
    "wrong-shape": (lambda p: _edit_batch(p, lambda d: d.update({b"data": d[b"data"][:, :3000].copy()})), "shape (10, 3000), expected (n, 3072)"),
    "wrong-dtype": (lambda p: _edit_batch(p, lambda d: d.update({b"data": d[b"data"].astype(np.float32)})), "dtype float32, expected uint8"),
    "labels-out-of-range": (lambda p: _edit_batch(p, lambda d: d[b"labels"].__setitem__(3, 10)), "labels out of range: found 10, expected 0..9"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(CIFAR_FAULTS))
def test_corrupt_cifar_file(tmp_path, capsys, small_counts, fault, sets):
    folder = _fake_cifar10(tmp_path / "data")
    corrupt, detail = CIFAR_FAULTS[fault]
    corrupt(folder / "data_batch_2")
    out = tmp_path / "run"
    rc, text = _cli(capsys, "train", "--quiet", "--arm", "dai", "--out", out, "--data-root", tmp_path / "data", *sets)
    _user_error(rc, text, str(folder / "data_batch_2"), detail, "Delete the folder")
    assert not out.exists() or not any(out.iterdir())  # the same command works once fixed


def test_data_root_missing(tmp_path, capsys, monkeypatch, sets):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar, "_download", offline)
    missing = tmp_path / "no-such-folder"
    rc, text = _cli(capsys, "train", "--quiet", "--arm", "dai", "--out", tmp_path / "run", "--data-root", missing, "--download", *sets)
    _user_error(rc, text, "CIFAR-10 not found", str(missing), "downloading it failed", "DAINV_DATA")


def test_downloaded_archive_with_wrong_md5(tmp_path, capsys, monkeypatch, sets):
    monkeypatch.setattr(cifar, "_download", lambda url, dest: Path(dest).write_bytes(b"<html>"))
    root = tmp_path / "data"
    rc, text = _cli(capsys, "train", "--quiet", "--arm", "dai", "--out", tmp_path / "run", "--data-root", root, "--download", *sets)
    _user_error(rc, text, "failed its MD5 check", "c58f30108f718f92721af3b95e74349a", str(root))
    assert list(root.iterdir()) == []  # the bad download is not kept


def _npz_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 64),
        "x_test": rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 32),
    }


NPZ_FAULTS = {
    "missing-key": (lambda a: a.pop("y_test"), "key 'y_test' is missing"),
    "wrong-dtype": (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "'x_train' has dtype float32"),
    "wrong-shape": (lambda a: a.update(x_test=a["x_test"][..., 0]), "'x_test' has shape (32, 32, 32)"),
    "labels-out-of-range": (lambda a: a["y_test"].__setitem__(0, -1), "negative labels"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(NPZ_FAULTS))
def test_bad_npz(tmp_path, capsys, fault, train_args):
    arrays = _npz_arrays()
    change, detail = NPZ_FAULTS[fault]
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    rc, text = _cli(capsys, *train_args(path, tmp_path / "run"))
    _user_error(rc, text, str(path), detail, "numpy.savez")


# ---------------------------------------------------------------------------------------------
# Bad settings: refused before anything is created


CONFIG_FAULTS = {
    "unknown-preset": (["--preset", "nope"], "unknown preset 'nope'; available presets: allcnn-tinyimagenet, cpu-ablation, cpu-long, cpu-short, densenet-cifar10, paper, paper-authors-code, quick, wrn-cifar10"),
    "unknown-key": (["--set", "train.lrr=0.1"], "unknown config key 'train.lrr'; valid keys here:"),
    "unknown-layer": (["--set", "train.layers=[conv1,conv10]"], "unknown layer name(s) ['conv10']"),
    "negative-lr": (["--set", "train.lr=-0.1"], "invalid setting train.lr: must be a positive learning rate, got -0.1"),
    "views-not-dividing-batch": (["--set", "train.views=3"], "not divisible by 3 views per seed"),
    "alpha-ge-1": (["--set", "train.alpha=1"], "invalid setting train.alpha: must be in [0, 1)"),
    "zero-epochs": (["--epochs", "0"], "invalid setting train.epochs: must be a positive number of epochs, got 0"),
    "not-a-number": (["--set", "train.lr=fast"], "config key 'train.lr' takes a number, got 'fast'"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_bad_setting(tmp_path, capsys, fault):
    args, detail = CONFIG_FAULTS[fault]
    out = tmp_path / "run"
    rc, text = _cli(capsys, "train", "--quiet", "--arm", "dai", "--out", out, *args)
    _user_error(rc, text, detail)
    assert not out.exists()


def test_debug_shows_the_traceback_and_plain_does_not(capsys):
    with pytest.raises(ConfigError, match="unknown preset"):
        cli.main(["--debug", "train", "--preset", "nope"])
    p = subprocess.run(
        [sys.executable, "-m", "dainv", "--debug", "train", "--preset", "nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode != 0
    assert "Traceback" in p.stderr and "ConfigError: unknown preset 'nope'" in p.stderr
    # (a real process without --debug: see test_sigkill_in_checkpoint_write_and_the_lock)


# ---------------------------------------------------------------------------------------------
# Resume and evaluate with the wrong run, checkpoint or data


def _copy_unfinished(reference: Path, dest: Path) -> Path:
    shutil.copytree(reference, dest)
    meta = json.loads((dest / "meta.json").read_text())
    meta["status"] = "interrupted"
    (dest / "meta.json").write_text(json.dumps(meta))
    (dest / "checkpoints" / "final.pt").unlink()
    return dest


def _edit_config(run: Path, section: str, key: str, value) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg[section][key] = value
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


RESUME_FAULTS = {
    "other-model": (lambda r: _edit_config(r, "model", "width", 0.25), "model.width = 0.125 there, 0.25 here"),
    "other-config": (lambda r: _edit_config(r, "train", "alpha", 0.0), "train.alpha = 0.1 there, 0.0 here"),
    "damaged-config": (lambda r: (r / "config.yaml").write_text("train: [unclosed"), "is not valid YAML"),
    "damaged-checkpoint": (lambda r: (r / "checkpoints/last.pt").write_bytes(b"PK\x03\x04junk"), "cannot read checkpoint"),
    "not-a-run": (lambda r: [(r / "meta.json").unlink(), (r / "config.yaml").unlink()], "not a dainv run folder (it needs config.yaml and meta.json)"),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(RESUME_FAULTS))
def test_resume_refuses(tmp_path, capsys, reference, fault):
    run = _copy_unfinished(reference, tmp_path / "run")
    change, detail = RESUME_FAULTS[fault]
    change(run)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    _user_error(rc, text, detail)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert not (run / ".lock").exists()


def test_resume_of_a_finished_run_says_so(capsys, reference):
    rc, text = _cli(capsys, "train", "--quiet", "--resume", reference)
    _user_error(rc, text, "is already finished; nothing to resume")


def test_a_finished_run_can_be_extended(tmp_path, capsys, reference):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    _edit_config(run, "train", "epochs", EPOCHS + 1)  # the one training setting that may change
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run, "--force")
    assert rc == 0, text
    assert _epochs(run) == list(range(1, EPOCHS + 2))
    assert torch.load(run / "checkpoints/final.pt", weights_only=True)["epoch"] == EPOCHS + 1


def test_evaluate_on_a_data_set_with_other_classes(tmp_path, capsys, reference):
    rng = np.random.default_rng(1)
    path = tmp_path / "hundred.npz"
    y = np.arange(100)
    x = rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    out = tmp_path / "eval"
    rc, text = _cli(capsys, "evaluate", reference, "--quiet", "--dataset", f"npz:{path}", "--out", out)
    _user_error(rc, text, "predicts 10 classes but the data set", "has 100", "data set it was trained on")
    assert not out.exists()
    rc, text = _cli(capsys, "evaluate", tmp_path / "nothing-here", "--quiet")
    _user_error(rc, text, "does not exist; give a run folder or a checkpoint file")
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    rc, text = _cli(capsys, "evaluate", tmp_path / "x.pt", "--quiet")
    _user_error(rc, text, "cannot read checkpoint", "damaged or not a PyTorch file")


# ---------------------------------------------------------------------------------------------
# Checkpoints that carry code: a .pt file is a pickle, and a pickle may call any function while
# it is read. Every way dainv reads one refuses it with one message, and nothing runs.


class _RunsCode:
    """What a malicious .pt file carries: unpickling it runs a shell command (here, a harmless
    one that creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _plant(reference: Path, path: Path, marker: Path) -> Path:
    """The reference run's final checkpoint, intact but for one code-carrying history entry."""
    state = torch.load(reference / "checkpoints/final.pt", weights_only=True)
    state["history"] = [*state["history"], _RunsCode(marker)]
    torch.save(state, path)
    return path


def _evil_resume(reference: Path, tmp: Path, npz: Path, marker: Path) -> list:
    run = _copy_unfinished(reference, tmp / "run")
    _plant(reference, run / "checkpoints" / "last.pt", marker)
    return ["train", "--quiet", "--resume", run]


LOADERS = {
    "evaluate FILE.pt": lambda ref, tmp, npz, marker: ["evaluate", _plant(ref, tmp / "evil.pt", marker), "--quiet",
                                                       "--out", tmp / "eval"],
    "evaluate --weights": lambda ref, tmp, npz, marker: ["evaluate", "--model", "allcnnc", "--dataset", f"npz:{npz}",
                                                         "--weights", _plant(ref, tmp / "evil.pt", marker), "--quiet"],
    "train --resume": _evil_resume,
}  # fmt: skip


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_code_carrying_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys, reference, npz, loader):
    marker = tmp_path / "code-ran"
    rc, text = _cli(capsys, *LOADERS[loader](reference, tmp_path, npz, marker))
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    _user_error(rc, text, "refused to load", "evil.pt" if "evaluate" in loader else "last.pt",
                "objects other than tensors and plain data", "posix.system", "Only load files you trust")  # fmt: skip
    assert text.count("dainv: error: ") == 1 and "Weights only load failed" not in text


def test_load_checkpoint_refuses_code_and_reads_a_real_checkpoint(tmp_path, reference):
    from dainv.checkpoint import load_checkpoint

    marker = tmp_path / "code-ran"
    with pytest.raises(RunError, match=r"refused to load .*evil.pt: it contains Python objects"):
        load_checkpoint(_plant(reference, tmp_path / "evil.pt", marker))
    assert not marker.exists()
    state = load_checkpoint(reference)  # everything a trainer stores is tensors and plain data
    assert state["epoch"] == EPOCHS and state["history"] and "optimizer" in state


# ---------------------------------------------------------------------------------------------
# Output folder not writable, disk full


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; see the EACCES variant")
def test_unwritable_output_folder_chmod(tmp_path, capsys, npz, train_args):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        rc, text = _cli(capsys, *train_args(npz, parent / "run"))
        _user_error(rc, text, f"cannot create run folder {parent / 'run'}")
        parent.chmod(0o700)
        (parent / "run").mkdir()
        (parent / "run").chmod(0o500)
        rc, text = _cli(capsys, *train_args(npz, parent / "run"))
        _user_error(rc, text, "is not writable; choose a writable --out")
    finally:
        parent.chmod(0o700)
        if (parent / "run").exists():
            (parent / "run").chmod(0o700)


def test_unwritable_output_folder_eacces(tmp_path, capsys, npz, monkeypatch, train_args):
    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runio.tempfile, "mkstemp", denied)
    out = tmp_path / "run"
    rc, text = _cli(capsys, *train_args(npz, out))
    _user_error(rc, text, f"cannot write {out / 'config.yaml'}: permission denied", "writable output folder")
    (tmp_path / "file").write_text("")
    rc, text = _cli(capsys, *train_args(npz, tmp_path / "file"))
    _user_error(rc, text, "is a file, not a folder; choose another --out")


def test_disk_full_keeps_the_last_checkpoint(tmp_path, capsys, npz, reference, monkeypatch, train_args):
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's last.pt: half written, then the disk is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(runio.torch, "save", full_disk)
        rc, text = _cli(capsys, *train_args(npz, run))
    last = run / "checkpoints" / "last.pt"
    _user_error(rc, text, f"no space left on device while writing {last}", "free some disk space and resume")
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the previous checkpoint is intact
    assert _epochs(run) == [1] and not list(run.glob("**/.*.tmp"))
    assert json.loads((run / "meta.json").read_text())["status"] == "failed"
    assert not (run / ".lock").exists()
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)  # the disk has space again
    assert rc == 0, text
    _assert_matches_reference(run, reference)


# ---------------------------------------------------------------------------------------------
# Numerical faults


def test_non_finite_loss_through_the_cli(tmp_path, capsys, npz, monkeypatch, train_args):
    import dainv.train as tr

    orig, calls = tr.F.cross_entropy, {"n": 0}

    def bad_ce(*a, **k):
        calls["n"] += 1
        out = orig(*a, **k)
        return out * float("nan") if calls["n"] == 3 else out  # epoch 2, step 1

    monkeypatch.setattr(tr.F, "cross_entropy", bad_ce)
    run = tmp_path / "run"
    rc, text = _cli(capsys, *train_args(npz, run, "--set", "train.log_every=1", "--set", "train.monitor_batches=0"))
    _user_error(rc, text, "the cross-entropy (CE) became nan at epoch 2, step 1 of 2", "last good checkpoint is kept")
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["epoch"] == 1
    assert _epochs(run) == [1]


# ---------------------------------------------------------------------------------------------
# Real processes: SIGKILL, SIGTERM and the lock


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start(args: list[str], log: Path, slow: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("DAINV_TEST_SLOW_SAVE", None)
    if slow:
        env["DAINV_TEST_SLOW_SAVE"] = slow
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dainv", *args],
            stdout=f, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    _STARTED.append(proc)
    return proc


def _wait_for(proc: subprocess.Popen, log: Path, cond, timeout: float = 180.0) -> None:
    t0 = time.monotonic()
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) before the moment: {log.read_text()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            pytest.fail(f"timed out waiting: {log.read_text()}")
        time.sleep(0.005)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _resume(capsys, run: Path) -> None:
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    assert rc == 0, text


def test_sigkill_in_checkpoint_write_and_the_lock(tmp_path, capsys, npz, reference, train_args):
    run, log = tmp_path / "run", tmp_path / "log"
    ck = run / "checkpoints"
    # The 2nd checkpoint write (epoch 2's last.pt) sleeps between its temp file and the rename.
    proc = _start(train_args(npz, run), log, "600:2")
    _wait_for(proc, log, lambda: (ck / "last.pt").exists() and any(ck.glob(".last.pt.*.tmp")))
    # A second process (this one) on the same run folder is refused, without a traceback: a
    # resume, and a fresh start into it (instead of "unfinished, use --resume").
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    _user_error(rc, text, f"{run} is in use by another dainv process (pid {proc.pid}")
    rc, text = _cli(capsys, *train_args(npz, run))
    _user_error(rc, text, f"is in use by another dainv process (pid {proc.pid}")
    _kill(proc)
    assert torch.load(ck / "last.pt", weights_only=True)["epoch"] == 1  # the old one, intact
    assert _epochs(run) == [1]
    assert json.loads((run / ".lock").read_text())["pid"] == proc.pid  # stale: taken over
    _resume(capsys, run)
    _assert_matches_reference(run, reference)
    assert not (run / ".lock").exists()


def test_sigkill_in_final_checkpoint_write(tmp_path, capsys, npz, reference, train_args):
    run, log = tmp_path / "run", tmp_path / "log"
    ck = run / "checkpoints"
    proc = _start(train_args(npz, run), log, "600:3")  # writes: last.pt ×2, then final.pt
    _wait_for(proc, log, lambda: any(ck.glob(".final.pt.*.tmp")))
    _kill(proc)
    assert torch.load(ck / "last.pt", weights_only=True)["epoch"] == EPOCHS
    assert not (ck / "final.pt").exists() and _epochs(run) == [1]  # metrics never run ahead
    _resume(capsys, run)  # nothing left to train: writes final.pt and the metrics
    _assert_matches_reference(run, reference)


def test_sigkill_mid_epoch(tmp_path, capsys, npz, reference, train_args):
    run, log = tmp_path / "run", tmp_path / "log"
    proc = _start(train_args(npz, run), log)
    _wait_for(proc, log, lambda: _epochs(run) == [1])  # epoch 1 saved: checkpoint, then metrics
    _kill(proc)  # in epoch 2 (logging epoch 1, or training)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"] is None and _epochs(run) == [1]
    _resume(capsys, run)
    _assert_matches_reference(run, reference)


def test_sigterm_stops_cleanly_after_saving(tmp_path, capsys, npz, reference, train_args):
    run, log = tmp_path / "run", tmp_path / "log"
    proc = _start(train_args(npz, run, "--set", "train.log_every=1"), log)
    _wait_for(proc, log, lambda: (run / "checkpoints" / "last.pt").exists())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, log.read_text()
    text = log.read_text()
    assert "SIGTERM: stopping after this step and saving" in text
    assert "dainv: interrupted; the run folder keeps its last checkpoint" in text
    assert "Traceback" not in text
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert not (run / ".lock").exists() and not (run / "checkpoints" / "final.pt").exists()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["partial"]["step_in_epoch"] == 1  # stopped mid-epoch 2
    _resume(capsys, run)
    _assert_matches_reference(run, reference)


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with runio.RunLock(tmp_path) as lock:
        assert lock.held and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text("")  # a process killed between creating and writing it
    runio.RunLock(tmp_path).acquire()

