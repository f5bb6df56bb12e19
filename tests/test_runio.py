"""Run-folder life cycle (dainv.runio): --force leaves nothing old, an atomic identity marker,
run_state, and clear messages for odd folders (issue 13: S1, S5, F9, F10)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from dainv import checkpoint, runio
from dainv.data import random_dataset
from dainv.errors import RunError
from dainv.train import Trainer, train

DATA = random_dataset(256, 128)


@pytest.fixture(scope="module")
def one_epoch(tiny):
    """``one_epoch(arm="baseline", *extra, seed=0)``: a tiny 1-epoch run config, no monitoring."""

    def make(arm="baseline", *extra, seed=0):
        return tiny(arm, "train.epochs=1", "train.monitor_batches=0", *extra, seed=seed)

    return make


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_epoch):
    run = tmp_path_factory.mktemp("runs") / "done"
    train(one_epoch(), run, quiet=True, data=DATA)
    return run


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_force_leaves_nothing_of_the_old_run(tmp_path, finished, monkeypatch, one_epoch):
    """S1: train, evaluate, then --force with other settings, killed in epoch 1 before any
    checkpoint: nothing of the old run (final.pt, eval/) may be read by a later command."""
    run = _copy(finished, tmp_path / "run")
    (run / "eval").mkdir()
    (run / "eval" / "summary.json").write_text('{"complete": true}')

    def killed(self, *a):
        raise SystemExit("killed")  # a kill inside the first step

    monkeypatch.setattr(Trainer, "train_step", killed)
    with pytest.raises(SystemExit):
        train(one_epoch("baseline", "model.width=0.25"), run, quiet=True, data=DATA, force=True)
    assert not (run / "eval").exists() and not (run / "checkpoints").exists()
    with pytest.raises(RunError, match="holds no checkpoint"):
        checkpoint.checkpoint_path(run)  # what `dainv evaluate RUN` looks up
    assert "width: 0.25" in (run / "config.yaml").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dainv-trash")]


def test_force_stopped_in_epoch_1_keeps_only_the_new_run(tmp_path, finished, monkeypatch, one_epoch):
    run = _copy(finished, tmp_path / "run")
    (run / "eval").mkdir()
    orig = Trainer.train_step

    def step(self, *a):
        orig(self, *a)
        self._stop_signal = 2  # SIGINT after the first step

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        train(one_epoch("baseline", "model.width=0.25", "train.log_every=1"), run, quiet=True, data=DATA, force=True)
    assert not (run / "eval").exists() and not (run / "checkpoints" / "final.pt").exists()
    state = checkpoint.load_checkpoint(run)  # last.pt of the new run, not the old final.pt
    assert state["epoch"] == 0 and state["model_info"]["kwargs"]["width"] == 0.25


def test_identity_marker_written_last_and_incomplete_folder_restarts(tmp_path, monkeypatch, one_epoch):
    """S5: a kill between config.yaml and meta.json leaves an 'incomplete' folder that a new
    start (no --force needed) or --force recovers, and --resume explains."""
    run = tmp_path / "run"
    real = runio.write_json

    def killed(path, obj):
        if path.name == "meta.json":
            raise SystemExit("killed before meta.json")
        real(path, obj)

    monkeypatch.setattr(runio, "write_json", killed)
    with pytest.raises(SystemExit):
        train(one_epoch(), run, quiet=True, data=DATA)
    monkeypatch.setattr(runio, "write_json", real)
    assert (run / "config.yaml").is_file() and not (run / "meta.json").exists()
    assert not runio.is_run_dir(run) and runio.run_state(run) == "incomplete"
    with pytest.raises(RunError, match="incomplete run folder.*nothing is lost.*--force"):
        train(None, run, resume=True, quiet=True, data=DATA)
    train(one_epoch(), run, quiet=True, data=DATA)  # a plain restart reuses it
    assert runio.run_state(run) == "finished"


def test_run_state(tmp_path, finished):
    assert runio.run_state(tmp_path / "nope") == "missing"
    (tmp_path / "empty").mkdir()
    assert runio.run_state(tmp_path / "empty") == "missing"
    assert runio.run_state(finished) == "finished"
    (tmp_path / "file").write_text("x")
    assert runio.run_state(tmp_path / "file") == "foreign"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert runio.run_state(tmp_path / "other") == "foreign"
    run = _copy(finished, tmp_path / "run")
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))  # killed
    assert runio.run_state(run) == "interrupted"
    with runio.RunLock(run):
        assert runio.run_state(run) == "running"


def test_out_name_too_long(tmp_path, one_epoch):
    with pytest.raises(RunError, match="run folder name too long.*choose a shorter --out"):
        train(one_epoch(), tmp_path / ("x" * 300), quiet=True, data=DATA)


def test_meta_json_not_an_object(tmp_path, finished, one_epoch):
    run = _copy(finished, tmp_path / "run")
    (run / "meta.json").write_text("[]")
    for call in (
        lambda: train(None, run, resume=True, quiet=True, data=DATA),
        lambda: train(one_epoch(), run, quiet=True, data=DATA),
    ):
        with pytest.raises(RunError, match=r"meta.json is damaged: it holds a JSON list.*--force"):
            call()
    train(one_epoch(), run, quiet=True, data=DATA, force=True)
    assert runio.read_meta(run)["status"] == "finished"


def test_lock_that_is_a_folder(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    (run / ".lock").mkdir()
    with pytest.raises(RunError, match=r"\.lock is a folder, not a dainv lock file.*rmdir"):
        train(None, run, resume=True, quiet=True, data=DATA, force=True)
    with pytest.raises(RunError, match="is a folder, not a dainv lock file"):
        runio.run_state(run)


def test_begin_run_writes_meta_last(tmp_path, monkeypatch):
    order = []
    real = runio.atomic_write

    def spy(path, write):
        order.append(os.path.basename(path))
        return real(path, write)

    monkeypatch.setattr(runio, "atomic_write", spy)
    runio.begin_run(tmp_path, "seed: 0\n", {"status": "running"})
    assert order[-1] == "meta.json" and order[0] == "config.yaml"
    assert torch.__version__  # the module imports torch; keep the import honest


# ---------------------------------------------------------------------------------------------
# The run lock is exclusive: never two holders, never taken from a live one, never removed by
# anyone but its holder (issue 20). Old lock: an O_EXCL file judged stale by its contents.

_HAMMER = """
import os, sys, time
from dainv import runio
from dainv.errors import RunError

run, log, go, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(f"{go}.{os.getpid()}", "w").close()  # ready: both start hammering together
while not os.path.exists(go):
    time.sleep(0.001)
lock, got, deadline = runio.RunLock(run), 0, time.monotonic() + 30
while got < n and time.monotonic() < deadline:
    try:
        lock.acquire()
    except RunError:
        continue
    for word in ("in", "out"):  # a holder's two lines; another holder would interleave its own
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {word}\\n")
    lock.release()
    got += 1
print(got)
"""


def test_two_processes_hammering_the_lock_never_hold_it_together(tmp_path):
    import subprocess
    import sys
    import time

    log, go = tmp_path / "log", tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _HAMMER, str(tmp_path), str(log), str(go), "1000"],
                         stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]  # fmt: skip
    t0 = time.monotonic()
    while len(list(tmp_path.glob("go.*"))) < 2 and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    go.touch()
    counts = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs) and sum(counts) > 100, counts
    lines = log.read_text().splitlines()
    pairs = list(zip(lines[::2], lines[1::2]))
    overlaps = [a for a, b in pairs if a.split()[1] != "in" or b != f"{a.split()[0]} out"]
    assert len(lines) == 2 * sum(counts) and not overlaps, f"{len(overlaps)} overlapping holds"
    assert not (tmp_path / ".lock").exists()


def _half_written(lock: runio.RunLock, other: runio.RunLock) -> None:
    lock.path.write_text("")  # the holder's record cut short (as if killed mid-write): still held
    with pytest.raises(RunError, match="in use by another dainv process \\(pid \\?"):
        other.acquire()


def _released_by_another(lock: runio.RunLock, other: runio.RunLock) -> None:
    with pytest.raises(RunError, match=f"in use by another dainv process \\(pid {os.getpid()} "):
        other.acquire()
    other.release()  # not its lock: nothing happens
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    with pytest.raises(RunError, match="in use"):
        runio.RunLock(lock.path.parent).check()


def _replaced_under_its_holder(lock: runio.RunLock, other: runio.RunLock) -> None:
    lock.path.unlink()  # deleted by hand while held: the next writer takes a new lock file
    other.acquire()
    lock.release()  # the old holder must not remove the new holder's file
    assert other.path.exists()
    with pytest.raises(RunError, match="in use"):
        runio.RunLock(lock.path.parent).acquire()
    other.release()


@pytest.mark.parametrize("case", [_half_written, _released_by_another, _replaced_under_its_holder])
def test_a_held_lock_stays_held(tmp_path, case):
    lock = runio.RunLock(tmp_path)
    lock.acquire()
    try:
        case(lock, runio.RunLock(tmp_path))
    finally:
        lock.release()
    runio.RunLock(tmp_path).acquire()  # free once its holder let go


def test_lock_of_a_killed_process_is_free_at_once(tmp_path):
    import signal
    import subprocess
    import sys

    code = "import sys, time; from dainv import runio; runio.RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"in use by another dainv process \\(pid {proc.pid} "):
            runio.RunLock(tmp_path).acquire()
        assert runio.run_state(tmp_path) == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == proc.pid  # its file stays, unheld
    with runio.RunLock(tmp_path) as lock:
        assert lock.held and json.loads(lock.path.read_text())["pid"] == os.getpid()
