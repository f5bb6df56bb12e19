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
    real = runio._atomic

    def spy(path, mode):
        order.append(os.path.basename(path))
        return real(path, mode)

    monkeypatch.setattr(runio, "_atomic", spy)
    runio.begin_run(tmp_path, "seed: 0\n", {"status": "running"})
    assert order[-1] == "meta.json" and order[0] == "config.yaml"
    assert torch.__version__  # the module imports torch; keep the import honest
