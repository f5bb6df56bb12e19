"""Reproductions that do not go stale or stick (issue 13 S2, S4, S5, F8), kept-checkpoint
evaluations (issue 9 §4) and parallel training (issue 10.8), on a tiny random npz data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dainv import cli
from dainv.errors import RunError
from dainv.reproduce import reproduce
from dainv.runio import incomplete_run

ARMS = ["baseline", "dai"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("npz") / "tiny.npz"
    x = rng.integers(0, 256, (288, 32, 32, 3), dtype=np.uint8)
    y = np.arange(288) % 10
    np.savez(path, x_train=x[:256], y_train=y[:256], x_test=x[256:], y_test=y[256:])
    return path


@pytest.fixture(scope="module")
def sets(tiny_overrides):
    """``sets(npz, *extra)``: the overrides of a tiny reproduction of the npz data set."""

    def make(npz, *extra):
        return [*tiny_overrides, f"data.dataset=npz:{npz}", "data.n_train=128", "train.batch_size=64", "data.n_test=32", "eval.batch_size=32", "eval.tta_views=2",
                "train.keep_epochs=[1]", *extra]  # fmt: skip

    return make


@pytest.fixture(scope="module")
def cli_args(sets):
    """``cli_args(npz, out, *extra)``: the arguments of ``dainv reproduce`` for :func:`sets`."""

    def make(npz, out, *extra):
        return ["reproduce", "--preset", "quick", "--out", str(out), "--quiet", "--arms", ",".join(ARMS),
                *[a for kv in sets(npz, *extra) for a in ("--set", kv)]]  # fmt: skip

    return make


def _stub_report(folder):
    """The report (figures: seconds each) is not what these tests are about."""
    path = folder / "report.md"
    path.write_text("stub")
    return path


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    monkeypatch.setattr("dainv.report.build_report", _stub_report)


@pytest.fixture(scope="module")
def repro(tmp_path_factory, npz, sets):
    out = tmp_path_factory.mktemp("rr") / "quick"
    with pytest.MonkeyPatch.context() as m:
        m.setattr("dainv.report.build_report", _stub_report)
        reproduce("quick", out, arms=ARMS, overrides=sets(npz), quiet=True)
    return out


def _weights(run):
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


def test_kept_checkpoints_are_evaluated_and_evaluations_record_their_checkpoint(repro):
    for arm in ARMS:
        run = repro / f"{arm}-s0"
        s = json.loads((run / "eval" / "summary.json").read_text())
        assert s["checkpoint"]["final"] is True and s["run_finished"] is True
        kept = json.loads((run / "eval-epoch-0001" / "summary.json").read_text())
        assert kept["checkpoint"]["epoch"] == 1 and (run / "eval-epoch-0001" / "scores.npz").is_file()


def test_stale_evaluation_is_redone(repro, npz, capsys, cli_args):
    """S2: an evaluation that scored another checkpoint is evaluated again, not reported."""
    ev = repro / "dai-s0" / "eval" / "summary.json"
    s = json.loads(ev.read_text())
    s["checkpoint"]["sha256"] = "0" * 64  # it scored some other checkpoint (e.g. last.pt of epoch 1)
    ev.write_text(json.dumps(s))
    (repro / "baseline-s0" / "eval-epoch-0001" / "scores.npz").unlink()  # half-written (old dainv)
    capsys.readouterr()
    assert cli.main(cli_args(npz, repro)) == 0
    err = capsys.readouterr().err
    assert "dai (seed 0): evaluating (the evaluation there is stale" in err
    assert "re-run `dainv evaluate`; it is done again" not in err  # no advice to do what it does
    assert "baseline (seed 0): evaluated the kept checkpoint of epoch 1" in err
    from dainv.evalfolders import eval_status

    assert eval_status(repro / "dai-s0") == "current"
    assert eval_status(repro / "baseline-s0", repro / "baseline-s0" / "eval-epoch-0001") == "current"


def test_other_settings_are_refused_with_the_keys(repro, npz, capsys, cli_args):
    """S4: a finished folder and different --set values: refused, listing the keys."""
    before = (repro / "reproduce.json").read_text()
    rc = cli.main(cli_args(npz, repro, "train.lr=0.05", "model.width=0.25"))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "train.lr = 0.01 there, 0.05 now" in err and "model.width" in err and "--force" in err
    assert (repro / "reproduce.json").read_text() == before


def test_force_retrains_the_differing_arms(tmp_path, npz, sets):
    out = tmp_path / "q"
    reproduce("quick", out, arms=["baseline"], overrides=sets(npz, "train.epochs=1", "train.keep_epochs=[]"), quiet=True)
    old = _weights(out / "baseline-s0")
    new = sets(npz, "train.epochs=1", "train.keep_epochs=[]", "train.lr=0.05")
    with pytest.raises(RunError, match="train.lr"):
        reproduce("quick", out, arms=["baseline"], overrides=new, quiet=True)
    reproduce("quick", out, arms=["baseline"], overrides=new, quiet=True, force=True)
    assert not torch.equal(_weights(out / "baseline-s0")["blocks.0.0.weight"], old["blocks.0.0.weight"])
    index = json.loads((out / "reproduce.json").read_text())
    assert "train.lr=0.05" in index["overrides"] and index["history"][-1]["retrained"] == ["baseline-s0"]
    s = json.loads((out / "baseline-s0" / "eval" / "summary.json").read_text())
    assert s["checkpoint"]["sha256"] != "" and s["run_finished"] is True


def test_a_half_created_run_folder_is_started_again(tmp_path, npz, capsys, cli_args):
    """S5: killed between config.yaml and meta.json: the next reproduce restarts that arm."""
    out = tmp_path / "q"
    args = cli_args(npz, out, "train.epochs=1", "train.keep_epochs=[]")
    args[args.index("--arms") + 1] = "baseline"
    assert cli.main(args) == 0
    run = out / "baseline-s0"
    (run / "meta.json").unlink()
    (run / "checkpoints" / "final.pt").unlink()
    assert incomplete_run(run)
    capsys.readouterr()
    assert cli.main(args) == 0, capsys.readouterr().err
    assert "left half-created by an interrupted start" in capsys.readouterr().err
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"


DAMAGED_META = {"truncated": b'{"status": "fini', "a list": b"[]", "binary": b"\x80\xff\x00", "empty": b""}


@pytest.mark.parametrize("damage", list(DAMAGED_META))
def test_a_trained_arm_with_a_damaged_meta_json_is_refused_not_deleted(tmp_path, npz, capsys, cli_args, damage):
    """A meta.json that exists but cannot be read is not a half-created folder: the arm may be
    trained. Refused, naming the file and the fix (as dainv train does); --force retrains it."""
    out = tmp_path / "q"
    args = cli_args(npz, out, "train.epochs=1", "train.keep_epochs=[]")
    args[args.index("--arms") + 1] = "baseline"
    assert cli.main(args) == 0
    run = out / "baseline-s0"
    (run / "meta.json").write_bytes(DAMAGED_META[damage])
    final = (run / "checkpoints" / "final.pt").read_bytes()
    assert not incomplete_run(run)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{run / 'meta.json'} is damaged" in err and "--force" in err, err
    assert "half-created" not in err and "Traceback" not in err and err.count("dainv: error: ") == 1
    assert (run / "checkpoints" / "final.pt").read_bytes() == final  # the trained arm is kept
    if damage == "truncated":  # the advice works
        assert cli.main([*args, "--force"]) == 0
        assert "meta.json is damaged; training the run again from scratch" in capsys.readouterr().err
        assert json.loads((run / "meta.json").read_text())["status"] == "finished"


def test_bad_out_and_damaged_index(tmp_path, npz, capsys, monkeypatch, sets, cli_args):
    """F8: --out that is a file; reproduce.json holding [1] or garbage: a fix that works."""
    (tmp_path / "file").write_text("x")
    rc = cli.main(cli_args(npz, tmp_path / "file"))
    err = capsys.readouterr().err
    assert rc == 2 and "is a file, not a folder" in err and "Traceback" not in err
    out = tmp_path / "q"
    out.mkdir()
    for junk in ("[1]", "{not json", '{"preset": "quick", "runs": [1]}'):
        (out / "reproduce.json").write_text(junk)
        rc = cli.main(cli_args(npz, out, "train.epochs=1", "train.keep_epochs=[]"))
        err = capsys.readouterr().err
        assert rc == 2 and "is damaged" in err and "--force" in err and "Traceback" not in err
    # The advice works: --force rebuilds the record (and the reproduction goes on, to its report).
    monkeypatch.undo()
    reproduce("quick", out, arms=["baseline"], overrides=sets(npz, "train.epochs=1", "train.keep_epochs=[]"),
              quiet=True, force=True)  # fmt: skip
    assert json.loads((out / "reproduce.json").read_text())["preset"] == "quick"
    assert (out / "report.md").read_text() != "stub"


def test_parallel_training_equals_sequential(tmp_path, npz, capsys, sets):
    """Issue 10.8: two arms as concurrent processes; each run deterministic (CPU fp32)."""
    sets = sets(npz, "train.epochs=1", "train.keep_epochs=[]", "device=cpu")
    reproduce("quick", tmp_path / "seq", arms=ARMS, overrides=sets, quiet=True)
    capsys.readouterr()
    reproduce("quick", tmp_path / "par", arms=ARMS, overrides=sets, quiet=True, parallel=2)
    err = capsys.readouterr().err
    assert err.count("(process ") == 2
    for arm in ARMS:
        a, b = _weights(tmp_path / "seq" / f"{arm}-s0"), _weights(tmp_path / "par" / f"{arm}-s0")
        assert all(torch.equal(a[k], b[k]) for k in a), arm
        log = (tmp_path / "par" / f"{arm}-s0" / "train.log").read_text()
        assert "epoch 1/1" in log
        s1 = json.loads((tmp_path / "seq" / f"{arm}-s0" / "eval" / "summary.json").read_text())
        s2 = json.loads((tmp_path / "par" / f"{arm}-s0" / "eval" / "summary.json").read_text())
        assert s1["invariance"]["median"] == s2["invariance"]["median"]
    assert not (tmp_path / "par" / "logs").exists()
    # the report must know which runs shared the machine (their epoch times are not an overhead)
    par = json.loads((tmp_path / "par" / "reproduce.json").read_text())
    assert par["trained_concurrently"] == sorted(f"{a}-s0" for a in ARMS)
    assert "trained_concurrently" not in json.loads((tmp_path / "seq" / "reproduce.json").read_text())


# ---------------------------------------------------------------------------------------------
# A stop at an arm's very end (issue 20): its last step, or while final.pt is written. The arm is
# complete, but the reproduction stops: no next arm, no evaluation, exit 130 like any stop.


def test_a_stop_in_an_arms_last_step_stops_the_reproduction(tmp_path, npz, capsys, monkeypatch, cli_args):
    from dainv.train import Trainer

    orig = Trainer.train_step

    def step(self, *a):
        orig(self, *a)
        if self.cfg.train.views == 1 and self.step + 1 == self.steps_per_epoch:  # baseline's last
            self._stop_signal = 2

    out = tmp_path / "q"
    args = cli_args(npz, out, "train.epochs=1", "train.keep_epochs=[]", "train.log_every=1")
    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", step)
        assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "it is finished and saved" in err and "dainv: interrupted" in err
    base = out / "baseline-s0"
    assert json.loads((base / "meta.json").read_text())["status"] == "finished"
    assert (base / "checkpoints" / "final.pt").is_file() and not (base / "eval").exists()
    assert not (out / "dai-s0").exists() and not (out / "report.md").exists()
    assert cli.main(args) == 0  # the same command goes on
    assert "baseline (seed 0): finished earlier" in capsys.readouterr().err


@pytest.mark.slow  # two arm processes and a timed SIGTERM: ~11 s
def test_a_stopped_arm_process_stops_a_parallel_reproduction(tmp_path, npz, monkeypatch, sets):
    import os
    import signal
    import threading
    import time

    out = tmp_path / "par"
    ck = out / "baseline-s0" / "checkpoints"
    # Each arm process sleeps 3 s between writing final.pt's temp file and renaming it.
    monkeypatch.setenv("DAINV_TEST_SLOW_SAVE", "3:2")
    sent = []

    def stop_baseline_while_it_saves_final():
        t0 = time.monotonic()
        while not any(ck.glob(".final.pt.*.tmp")) and time.monotonic() - t0 < 120:
            time.sleep(0.005)
        pid = json.loads((out / "baseline-s0" / ".lock").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
        sent.append(pid)

    watcher = threading.Thread(target=stop_baseline_while_it_saves_final, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        reproduce("quick", out, arms=ARMS, overrides=sets(npz, "train.epochs=1", "train.keep_epochs=[]", "device=cpu"),
                  quiet=True, parallel=2)  # fmt: skip
    watcher.join(timeout=5)
    assert sent, "the baseline process was never seen writing final.pt"
    base = out / "baseline-s0"
    assert json.loads((base / "meta.json").read_text())["status"] == "finished"
    assert (base / "checkpoints" / "final.pt").is_file()
    assert "stopping here" in (base / "train.log").read_text()
    assert not any(out.glob("*/eval")) and not (out / "report.md").exists()
