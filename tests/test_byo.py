"""Bring your own network and data, through the real CLI: a thesis model and a user's factory on
an image folder (two image sizes, one corrupt file), trained and evaluated; the folder's cache
reused; a plain state_dict evaluated with ``--model/--weights``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

FACTORY = '''
from collections import OrderedDict
from torch import nn


def factory(num_classes, width=8):
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, padding=1), act1=nn.ReLU(),
        conv2=nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2 * width, num_classes),
    ))
'''

TOY = ["--epochs", "1", "--set", "train.batch_size=16", "--set", "train.monitor_batches=1",
       "--set", "eval.batch_size=64", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for c, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                size = 32 if i % 2 else 40  # two sizes: data.image_size is needed
                px = rng.normal(colour, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(px).save(folder / f"{i}.png")
    (root / "images" / "train" / "class0" / "broken.png").write_bytes(b"not an image")
    (root / "mynets.py").write_text(FACTORY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(root)])}
    return root, env


def dainv(world, *args: str) -> subprocess.CompletedProcess:
    root, env = world
    return subprocess.run([sys.executable, "-m", "dainv", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


DATA = ["--set", "data.dataset=folder:images", "--set", "data.image_size=32"]


def test_folder_needs_image_size_and_names_the_corrupt_file(world):
    p = dainv(world, "train", "--arm", "dai", "--out", "runs/x", "--set", "data.dataset=folder:images",
              "--set", "data.skip_bad=true", *TOY)  # fmt: skip
    assert p.returncode == 2 and "image_size" in p.stderr and "Traceback" not in p.stderr
    p = dainv(world, "train", "--arm", "dai", "--out", "runs/x", *DATA, *TOY)
    assert p.returncode == 2 and "broken.png" in p.stderr and "Traceback" not in p.stderr


def test_thesis_model_on_an_image_folder(world):
    root, _ = world
    args = ["--set", "model.name=wrn-10-1", "--set", "train.layers=auto", "--set", "data.skip_bad=true"]
    p = dainv(world, "train", "--arm", "dai", "--out", "runs/wrn", *DATA, *args, *TOY)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "broken.png" in p.stderr or "skipped 1" in p.stderr  # counted and reported
    assert list(root.joinpath("images").glob(".dainv-cache-*.npz"))  # decoded once, cached
    p = dainv(world, "evaluate", "runs/wrn", "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((root / "runs/wrn/eval/summary.json").read_text())
    assert s["invariance"]["layers"] == ["input", "block1", "block2", "block3"]
    # The second run loads the cache instead of decoding the images again.
    p = dainv(world, "train", "--arm", "baseline", "--out", "runs/wrn-b", *DATA, *args, *TOY)
    assert p.returncode == 0 and "cache" in p.stderr, p.stderr[-3000:]


def test_users_factory_trains_and_evaluates(world):
    root, _ = world
    args = ["--set", "model.name=mynets:factory", "--set", "train.layers=[act1, act2]",
            "--set", "data.skip_bad=true"]  # fmt: skip
    p = dainv(world, "train", "--arm", "dai", "--out", "runs/mine", *DATA, *args, *TOY)
    assert p.returncode == 0, p.stderr[-3000:]
    p = dainv(world, "evaluate", "runs/mine", "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((root / "runs/mine/eval/summary.json").read_text())
    assert s["invariance"]["layers"][-2:] == ["act1", "act2"]


def test_plain_state_dict_of_a_factory_model(world):
    root, _ = world
    sys.path.insert(0, str(root))
    try:
        from mynets import factory
    finally:
        sys.path.remove(str(root))
    torch.manual_seed(0)
    torch.save(factory(num_classes=10).state_dict(), root / "plain.pt")
    rng = np.random.default_rng(1)
    np.savez(root / "d.npz", x_train=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(16) % 10)  # fmt: skip
    p = dainv(world, "evaluate", "--model", "mynets:factory", "--weights", "plain.pt",
              "--data", "npz:d.npz", "--layers", "act1,act2", "--quiet")  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "act2" in p.stdout and "accuracy" in p.stdout
