"""Evaluation outputs that cannot go stale or be half-written, kept checkpoints, undefined scores,
interrupts, and evaluating any network (issues 9 §4, 10.3, 11.4, 12.4, 13 S2/S3/F6)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from dainv import cli
from dainv import evaluate as ev
from dainv.checkpoint import model_info, save_checkpoint
from dainv.data import random_dataset
from dainv.errors import RunError
from dainv.evalfolders import eval_status
from dainv.evaluate import EvalResult, evaluate, evaluate_kept, evaluate_weights
from dainv.measure import format_summary, invariance_profile, summarise
from dainv.models import AllCNNC
from dainv.train import train

N = 16  # test images scored per evaluation: fast


@pytest.fixture(scope="module")
def data():
    return random_dataset(256, 128)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny, data):
    """A finished 2-epoch run that kept its epoch-1 checkpoint, tested on N images (so that an
    evaluation with ``n_test=N`` is the run's own protocol)."""
    path = tmp_path_factory.mktemp("evo") / "run"
    cfg = tiny("dai", "train.keep_epochs=[1]", "eval.batch_size=48", "eval.tta_views=2", f"data.n_test={N}")
    train(cfg, path, quiet=True, data=data)
    return path


def _copy(run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


def test_summary_records_the_checkpoint_and_status(run, data, tmp_path):
    r = _copy(run, tmp_path)
    assert eval_status(r, r / "eval") == "missing"
    s = evaluate(r, data=data, n_test=N, quiet=True)
    assert isinstance(s, EvalResult) and s.out_dir == r / "eval"
    summary = json.loads((r / "eval" / "summary.json").read_text())
    ck = summary["checkpoint"]
    assert ck["path"].endswith("final.pt") and ck["epoch"] == 2 and ck["final"] is True
    assert len(ck["sha256"]) == 64 and summary["run_finished"] is True and summary["complete"] is True
    assert eval_status(r) == "current"


def test_stale_evaluation_is_detected(run, data, tmp_path, capsys):
    """S2: an evaluation of a checkpoint the run no longer holds as final is stale."""
    r = _copy(run, tmp_path)
    # The run still training: last.pt at epoch 1, no final.pt, meta says running.
    (r / "checkpoints" / "final.pt").unlink()
    shutil.copy(r / "checkpoints" / "epoch-0001.pt", r / "checkpoints" / "last.pt")
    meta = json.loads((r / "meta.json").read_text())
    (r / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    capsys.readouterr()
    s = evaluate(r, data=data, n_test=N, quiet=True)
    assert "epoch 1 of 2 — not the final model" in capsys.readouterr().err
    assert s["checkpoint"]["final"] is False and s["run_finished"] is False
    # The run finishes: the evaluation of epoch 1 is stale, not final.
    shutil.copy(run / "checkpoints" / "final.pt", r / "checkpoints" / "final.pt")
    assert eval_status(r) == "stale"
    evaluate(r, data=data, n_test=N, quiet=True)
    assert eval_status(r) == "current"
    # An evaluation written by an older dainv (no checkpoint record) is stale too.
    summary = json.loads((r / "eval" / "summary.json").read_text())
    del summary["checkpoint"]
    (r / "eval" / "summary.json").write_text(json.dumps(summary))
    assert eval_status(r) == "stale"


class Killed(BaseException):
    """Stands for SIGKILL: no handler runs on its way up."""


def test_kill_between_summary_and_scores_leaves_no_half_folder(run, data, tmp_path, monkeypatch):
    """S3: a process killed while writing leaves the previous complete evaluation, or none."""
    r = _copy(run, tmp_path)

    def killed(*a, **k):
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(np, "savez_compressed", killed)
        with pytest.raises(Killed):
            evaluate(r, data=data, n_test=N, quiet=True)
    assert not (r / "eval").exists()
    assert eval_status(r) == "missing"
    evaluate(r, data=data, n_test=N, quiet=True)
    before = {p.name: p.read_bytes() for p in (r / "eval").iterdir()}
    with monkeypatch.context() as m:
        m.setattr(np, "savez_compressed", killed)
        with pytest.raises(Killed):
            evaluate(r, data=data, n_test=N, seed=3, quiet=True)
    assert {p.name: p.read_bytes() for p in (r / "eval").iterdir()} == before
    # A later evaluation cleans up what the killed one left and replaces the folder whole.
    evaluate(r, data=data, n_test=N, seed=3, quiet=True)
    assert sorted(p.name for p in r.iterdir() if p.name.startswith(".eval")) == []
    assert json.loads((r / "eval" / "summary.json").read_text())["protocol"]["seed"] == 3


def test_out_that_is_not_an_evaluation_folder_is_refused(run, data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="not an evaluation folder"):
        evaluate(run, out_dir=tmp_path / "mine", data=data, n_test=N, quiet=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_sigint_during_evaluate_says_nothing_was_written(run, tmp_path, monkeypatch, capsys):
    r = _copy(run, tmp_path)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("dainv.measure.apply", interrupted)
    capsys.readouterr()
    # Through the real CLI with the run's data set replaced by random images in memory:
    monkeypatch.setattr(ev, "load_configured", lambda *a, **k: random_dataset(256, 128))
    rc = cli.main(["evaluate", str(r), "--quiet", "--n-test", "8"])
    err = capsys.readouterr().err
    assert rc == 130, err
    assert "interrupted" in err and "nothing was written" in err
    assert "--resume" not in err and "Traceback" not in err
    assert not (r / "eval").exists()


def test_undefined_scores_are_reported_not_a_crash(run, data, tmp_path):
    """F6: Eq. 2's denominator is 0 for one test image or identical test images."""
    one = evaluate(run, out_dir=tmp_path / "one", data=data, n_test=1, quiet=True)
    assert all(np.isnan(v).all() for v in one.scores.values())
    assert one["invariance"]["median"]["conv3"] is None
    assert one["invariance"]["n_undefined"]["conv3"] == 5  # T = 5 transformations
    same = replace(data, x_test=data.x_test[:1].expand(8, -1, -1, -1).contiguous(), y_test=data.y_test[:8])
    s = evaluate(run, out_dir=tmp_path / "same", data=same, n_test=8, quiet=True)
    assert s["invariance"]["median"]["input"] is None
    assert "undefined" in format_summary(s.summary)
    assert json.loads((tmp_path / "same" / "summary.json").read_text())["invariance"]["median"]["conv9"] is None
    st = summarise({"a": np.array([[np.nan, 0.5], [0.25, 0.75]])})
    assert st["median"]["a"] == 0.5 and st["n_undefined"]["a"] == 1


def test_kept_checkpoints_are_evaluated(run, data, tmp_path):
    """Issue 9 §4: RUN/eval-epoch-NNNN/ for each kept checkpoint, same layout as RUN/eval/."""
    r = _copy(run, tmp_path)
    done = evaluate_kept(r, data=data, n_test=N, quiet=True)
    assert [x.out_dir.name for x in done] == ["eval-epoch-0001"]
    s = json.loads((r / "eval-epoch-0001" / "summary.json").read_text())
    assert s["checkpoint"]["epoch"] == 1 and s["checkpoint"]["final"] is False
    assert (r / "eval-epoch-0001" / "scores.npz").is_file()
    assert eval_status(r, r / "eval-epoch-0001") == "current"
    assert evaluate_kept(r, data=data, n_test=N, quiet=True) == []  # current: skipped
    # The same checkpoint evaluated again (not copied): the same scores, bit for bit.
    again = evaluate(r, checkpoint="epoch-0001", out_dir=tmp_path / "again", data=data, n_test=N, quiet=True)
    np.testing.assert_array_equal(again.scores["conv5"], done[0].scores["conv5"])


def test_scores_stay_on_the_device_until_the_end(run, data, monkeypatch):
    """Issue 10.3: one device→host copy of the scores, not two per layer per batch."""
    calls = []
    orig = torch.Tensor.cpu

    def counting(self, *a, **k):
        calls.append(tuple(self.shape))
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    evaluate(run, data=data, n_test=N, quiet=True, write=False)
    assert len(calls) <= 1, calls


def test_evaluate_weights_of_a_plain_state_dict(data, tmp_path):
    """Issue 11.4: a network trained anywhere — its state_dict and its model's name."""
    torch.manual_seed(0)
    net = AllCNNC(width=0.125).eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    s = evaluate_weights("allcnnc", tmp_path / "w.pt", data=data, layers=["input", "conv3", "conv9"],
                         model_kwargs={"width": 0.125}, device="cpu", n_test=N, quiet=True)  # fmt: skip
    assert s.out_dir == tmp_path / "w-eval" and s["invariance"]["layers"] == ["input", "conv3", "conv9"]
    summary = json.loads((tmp_path / "w-eval" / "summary.json").read_text())
    assert summary["model"] == "allcnnc" and summary["checkpoint"]["sha256"] and summary["accuracy"]
    # The same numbers from Python on the same images, with the same protocol.
    prof = invariance_profile(net, data.x_test[:N], layers=["input", "conv3", "conv9"])
    for k in prof:
        np.testing.assert_array_equal(prof[k], s.scores[k])
        assert prof[k].shape == (N, 5)
    with pytest.raises(RunError, match="do not fit model"):
        evaluate_weights("allcnnc", tmp_path / "w.pt", data=data, n_test=N, quiet=True, write=False)
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(RunError, match="cannot read weights"):
        evaluate_weights("allcnnc", tmp_path / "bad.pt", data=data, quiet=True)


def test_checkpoints_without_config_or_with_an_unknown_model(data, tmp_path, capsys):
    torch.manual_seed(0)
    net = AllCNNC(width=0.125)
    save_checkpoint(tmp_path / "a.pt", net, info=model_info("allcnnc", 10, width=0.125))
    with pytest.raises(RunError, match="carries no run config.*--data"):
        evaluate(tmp_path / "a.pt", quiet=True)
    s = evaluate(tmp_path / "a.pt", data=data, n_test=N, quiet=True)
    assert s.out_dir == tmp_path / "a-eval" and s["checkpoint"]["final"] is True
    # A checkpoint dict with no 'config' entry at all.
    torch.save({"format": 2, "model": net.state_dict(), "model_info": model_info("allcnnc", 10, width=0.125)}, tmp_path / "b.pt")
    assert evaluate(tmp_path / "b.pt", data=data, n_test=N, quiet=True, write=False)["invariance"]["n_images"] == N
    # A model registered only in Python: a clear message through the CLI, no traceback.
    save_checkpoint(tmp_path / "c.pt", net, info=model_info("my-own-net", 10))
    rc = cli.main(["evaluate", str(tmp_path / "c.pt"), "--quiet", "--dataset", "cifar10"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot build its model 'my-own-net'" in err and "Traceback" not in err
    rc = cli.main(["evaluate", str(tmp_path / "b.pt"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "carries no run config" in err and "Traceback" not in err
