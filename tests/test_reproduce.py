"""`dainv reproduce` at toy scale on real CIFAR-10 (slow): arms, report, skip and resume."""

from __future__ import annotations

import json

import pytest
import torch

from dainv.cli import main
from dainv.train import Trainer


@pytest.fixture(scope="module")
def sets(tiny_overrides):
    """One epoch of a 256-image subset at width 1/8, 64 test images (seconds per arm), as --set
    options."""
    return [a for o in [*tiny_overrides, "train.epochs=1", "data.n_test=64", "eval.batch_size=64"] for a in ("--set", o)]


@pytest.fixture(scope="module")
def repro(tmp_path_factory, cifar_root, sets):
    out = tmp_path_factory.mktemp("repro") / "quick"
    assert main(["reproduce", "--preset", "quick", "--out", str(out), "--quiet", *sets]) == 0
    return out


def test_reproduce_writes_every_arm_report_and_figure(repro):
    index = json.loads((repro / "reproduce.json").read_text())
    assert index["preset"] == "quick" and index["arms"] == ["baseline", "dai", "control"]
    for arm in ("baseline", "dai", "control"):
        run = repro / f"{arm}-s0"
        assert json.loads((run / "meta.json").read_text())["status"] == "finished"
        assert (run / "eval" / "summary.json").is_file() and (run / "eval" / "scores.npz").is_file()
    for name in ("fig1_invariance", "fig2_dai_loss", "fig_accuracy"):
        for ext in ("png", "svg"):
            assert (repro / "figures" / f"{name}.{ext}").stat().st_size > 1000
    md = (repro / "report.md").read_text()
    assert "baseline" in md and "dai" in md and "control" in md
    assert "data:image/png;base64," in (repro / "report.html").read_text()


def test_arms_start_from_identical_weights(random_data, tiny):
    states = [Trainer(tiny(arm), None, data=random_data).model.state_dict() for arm in ("baseline", "dai", "control")]
    for s in states[1:]:
        assert all(torch.equal(states[0][k], s[k]) for k in s)


def test_report_rebuilds_and_second_run_skips(repro, capsys, sets):
    (repro / "report.md").unlink()
    assert main(["report", str(repro)]) == 0
    assert (repro / "report.md").is_file()
    before = {a: (repro / f"{a}-s0" / "checkpoints" / "final.pt").stat().st_mtime_ns for a in ("baseline", "dai")}
    capsys.readouterr()
    assert main(["reproduce", "--preset", "quick", "--out", str(repro), "--quiet", "--arms", "baseline,dai", *sets]) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier, skipping training") == 2
    after = {a: (repro / f"{a}-s0" / "checkpoints" / "final.pt").stat().st_mtime_ns for a in ("baseline", "dai")}
    assert before == after


def test_interrupted_arm_resumes(tmp_path, cifar_root, monkeypatch, capsys, sets):
    import signal

    out = tmp_path / "r"
    orig = Trainer.train_step

    def step(self, *args):
        orig(self, *args)
        if self.cfg.train.views == 8:  # interrupt the dai arm after its first step
            self._stop_signal = signal.SIGINT

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", step)
        assert main(["reproduce", "--preset", "quick", "--out", str(out), "--quiet", "--arms", "baseline,dai", *sets]) == 130
    assert json.loads((out / "dai-s0" / "meta.json").read_text())["status"] == "interrupted"
    capsys.readouterr()
    assert main(["reproduce", "--preset", "quick", "--out", str(out), "--quiet", "--arms", "baseline,dai", *sets]) == 0
    err = capsys.readouterr().err
    assert "baseline (seed 0): finished earlier" in err and "resuming the interrupted run" in err
    assert json.loads((out / "dai-s0" / "meta.json").read_text())["status"] == "finished"
    assert (out / "report.md").is_file()


def test_reproduce_errors(tmp_path, capsys):
    assert main(["reproduce", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "quick", "--arms", "baseline,dia", "--out", str(tmp_path / "x")]) == 2
    assert "unknown arm" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something.txt").write_text("x")
    assert main(["reproduce", "--preset", "quick", "--out", str(tmp_path / "full")]) == 2
    assert "not a dainv reproduction" in capsys.readouterr().err
