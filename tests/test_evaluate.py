"""Evaluation (on synthetic CIFAR-shaped data): outputs and shapes, agreement with Eq. 2 in
memory, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dainv.augment import SCHEMES, apply, sample_params
from dainv.checkpoint import build_from_checkpoint, load_checkpoint
from dainv.config import from_dict
from dainv.data import images_to_float
from dainv.errors import RunError
from dainv.evaluate import evaluate
from dainv.invariance import invariance_scores
from dainv.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, random_data):
    run = tmp_path_factory.mktemp("eval") / "run"
    train(tiny("dai", "train.epochs=1"), run, quiet=True, data=random_data)
    return run


def test_evaluate_outputs_and_matches_in_memory_scores(trained, random_data):
    n, t = 64, 5
    s = evaluate(trained, data=random_data, n_test=n, quiet=True)
    layers = ["input"] + [f"conv{i}" for i in range(1, 10)]
    summary = json.loads((trained / "eval" / "summary.json").read_text())
    assert summary["invariance"]["layers"] == layers and summary["invariance"]["n_images"] == n
    assert set(summary["accuracy"]) == {"single_view", "light_tta10"}
    assert summary["protocol"]["scheme"] == "heavier_eval" and summary["protocol"]["bn"] == "eval"
    with np.load(trained / "eval" / "scores.npz") as z:
        assert sorted(z.files) == sorted(layers)
        assert all(z[k].shape == (n, t) for k in layers)
        for k in layers:
            assert summary["invariance"]["median"][k] == pytest.approx(float(np.median(z[k])), abs=1e-6)

    # Reference: the same transformations drawn by hand, Eq. 2 on the whole set in memory.
    state = load_checkpoint(trained)
    model, cfg = build_from_checkpoint(state, torch.device("cpu")), from_dict(state["config"])
    x = images_to_float(random_data.x_test[:n])
    gen = torch.Generator().manual_seed(cfg.eval.seed * 1009)
    bs2 = cfg.eval.batch_size // (t + 1)  # evaluate's pass-2 batch: originals + T views
    views = []
    for i in range(0, n, bs2):
        xb = x[i : i + bs2].repeat_interleave(t, 0)
        views.append(apply(xb, sample_params(SCHEMES["heavier_eval"], xb.shape[0], gen), cfg.augment.interpolation))
    with torch.no_grad():
        _, a = model(x, taps=layers)
        _, b = model(torch.cat(views), taps=layers)
    for k in layers:
        ref = invariance_scores(a[k], b[k].reshape(n, t, *b[k].shape[1:])).numpy()
        np.testing.assert_allclose(s["_scores"][k], ref, rtol=1e-4, atol=2e-4)
    assert np.all(s["_scores"]["input"] <= 1)


def test_evaluate_is_reproducible_and_per_transform(trained, random_data, tmp_path):
    a = evaluate(trained, out_dir=tmp_path / "a", data=random_data, n_test=32, quiet=True, per_transform=True)
    b = evaluate(trained, out_dir=tmp_path / "b", data=random_data, n_test=32, quiet=True)
    np.testing.assert_array_equal(a["_scores"]["conv5"], b["_scores"]["conv5"])
    pt = a["per_transform"]
    assert set(pt) == {"rotation", "translation", "zoom", "shear", "flip", "brightness", "contrast"}
    assert all(len(v) == 10 for v in pt.values())
    # Brightness shifts every pixel: pixel-space invariance is below 1; flip alone changes input too.
    assert pt["brightness"]["input"] < 1 and pt["flip"]["input"] < 1
    with np.load(tmp_path / "a" / "per_transform.npz") as z:
        assert z["rotation/conv3"].shape == (32, 5)


def test_evaluate_errors(trained, random_data, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        evaluate(tmp_path / "nope", data=random_data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no checkpoint"):
        evaluate(tmp_path / "empty", data=random_data)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read checkpoint"):
        evaluate(junk, data=random_data)
    hundred = replace(random_data, num_classes=100, name="cifar100-like")
    with pytest.raises(RunError, match="predicts 10 classes but the data set"):
        evaluate(trained, data=hundred)
