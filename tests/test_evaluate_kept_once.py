"""A kept checkpoint that is the final model (the last kept epoch is the last epoch) is measured
once: ``eval-epoch-NNNN/`` gets the scores of ``eval/`` with its own checkpoint record."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dainv.evaluate
from dainv.checkpoint import file_digest
from dainv.evalfolders import eval_status
from dainv.evaluate import evaluate, evaluate_kept
from dainv.reproduce import reproduce

# One arm, two epochs of 128 random images, both epochs kept: epoch-0002.pt is final.pt.
SETS = ["model.width=0.125", "train.precision=fp32", "train.monitor_batches=1", "train.log_every=2",
        "data.n_train=128", "train.batch_size=64", "data.n_test=32", "eval.batch_size=32",
        "eval.tta_views=2", "train.epochs=2", "train.milestones=[1]", "train.keep_epochs=[1,2]"]  # fmt: skip


def _stub_report(folder):
    path = folder / "report.md"
    path.write_text("stub")
    return path


def _scores(folder):
    with np.load(folder / "scores.npz") as z:
        return {k: z[k] for k in z.files}


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A reproduction of one arm; returns (its run folder, the checkpoints each measurement scored)."""
    tmp = tmp_path_factory.mktemp("once")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8)
    y = np.arange(160) % 10
    np.savez(tmp / "tiny.npz", x_train=x[:128], y_train=y[:128], x_test=x[128:], y_test=y[128:])
    calls = []
    score = dainv.evaluate._score

    def counting(*args, **kwargs):
        calls.append(args[-2])  # the progress label: "evaluate <checkpoint file>"
        return score(*args, **kwargs)

    with pytest.MonkeyPatch.context() as m:
        m.setattr("dainv.report.build_report", _stub_report)
        m.setattr(dainv.evaluate, "_score", counting)
        reproduce("quick", tmp / "out", arms=["baseline"], overrides=[*SETS, f"data.dataset=npz:{tmp / 'tiny.npz'}"],
                  per_transform=True, quiet=True)  # fmt: skip
    return tmp / "out" / "baseline-s0", calls


def test_the_final_model_is_measured_once(measured):
    run, calls = measured
    ck = run / "checkpoints"
    assert file_digest(ck / "epoch-0002.pt") == file_digest(ck / "final.pt")  # the same file content
    assert file_digest(ck / "epoch-0001.pt") != file_digest(ck / "final.pt")
    # eval/ (final.pt) and eval-epoch-0001/ are measured; eval-epoch-0002/ is not measured again
    assert sorted(calls) == ["evaluate epoch-0001.pt", "evaluate final.pt"]


def test_the_copy_records_its_own_checkpoint_and_is_current(measured):
    run, _ = measured
    final, kept = _summary(run / "eval"), _summary(run / "eval-epoch-0002")
    rec = kept["checkpoint"]
    assert rec["path"] == str(run / "checkpoints" / "epoch-0002.pt")
    assert rec["epoch"] == 2 and rec["final"] is True and rec["step"] == final["checkpoint"]["step"]
    assert rec["sha256"] == file_digest(run / "checkpoints" / "epoch-0002.pt") == final["checkpoint"]["sha256"]
    assert kept["copied_from"] == str(run / "eval") and "copied_from" not in final
    assert "copied_from" not in _summary(run / "eval-epoch-0001")
    for key in ("accuracy", "invariance", "protocol"):
        assert kept[key] == final[key], key
    # per-transformation scores were asked for the final evaluation only, as before
    assert "per_transform" in final and (run / "eval" / "per_transform.npz").is_file()
    assert "per_transform" not in kept and not (run / "eval-epoch-0002" / "per_transform.npz").exists()
    copied, scored = _scores(run / "eval-epoch-0002"), _scores(run / "eval")
    assert copied.keys() == scored.keys()
    for layer in scored:
        np.testing.assert_array_equal(copied[layer], scored[layer])
    for folder in ("eval", "eval-epoch-0001", "eval-epoch-0002"):
        assert eval_status(run, run / folder) == "current", folder
    from dainv.report.load import load_run

    loaded = load_run(run)
    assert sorted(loaded.epoch_evals) == [1, 2] and loaded.stale_reason is None


def test_the_copy_equals_a_fresh_measurement(measured):
    """What the copy holds is what measuring the kept checkpoint gives (``redo``: no copy)."""
    run, _ = measured
    copied = _scores(run / "eval-epoch-0002")
    redone = evaluate_kept(run, redo=True, quiet=True, write=False)
    fresh = {r.summary["checkpoint"]["epoch"]: r for r in redone}
    assert "copied_from" not in fresh[2].summary
    assert fresh[2].summary["accuracy"] == _summary(run / "eval-epoch-0002")["accuracy"]
    for layer, s in fresh[2].scores.items():
        np.testing.assert_array_equal(s, copied[layer])


def test_another_protocol_is_measured(measured, monkeypatch):
    """Only the same measurement is copied: other test images (n_test) are measured."""
    run, _ = measured
    calls = []
    score = dainv.evaluate._score
    monkeypatch.setattr(dainv.evaluate, "_score", lambda *a, **k: calls.append(1) or score(*a, **k))
    r = evaluate(run, checkpoint="epoch-0002", reuse=run / "eval", n_test=16, quiet=True, write=False)
    assert calls == [1] and "copied_from" not in r.summary and r.summary["invariance"]["n_images"] == 16
    r = evaluate(run, checkpoint="epoch-0002", reuse=run / "eval", quiet=True, write=False)
    assert calls == [1] and r.summary["copied_from"] == str(run / "eval")
    r = evaluate(run, checkpoint="epoch-0001", reuse=run / "eval", quiet=True, write=False)
    assert calls == [1, 1] and "copied_from" not in r.summary  # other weights
