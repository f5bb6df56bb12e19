"""Shared fixtures: the real CIFAR-10 (read from $DAINV_DATA or ../shared/data) and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dainv.config import load_config

REPO = Path(__file__).resolve().parents[1]


def cifar_root() -> Path:
    env = os.environ.get("DAINV_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def cifar10():
    """The real CIFAR-10, loaded once per test session."""
    from dainv.data import load_dataset

    root = cifar_root()
    if not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR-10 not found under {root} (set DAINV_DATA)")
    return load_dataset("cifar10", root, download=False)


TINY = [
    "data.n_train=256",
    "data.n_test=128",
    "model.width=0.125",
    "train.epochs=2",
    "train.milestones=[1]",
    "train.precision=fp32",
    "train.monitor_batches=1",
    "train.log_every=2",
    "eval.batch_size=128",
]


def tiny_config(arm: str = "dai", *extra: str, seed: int = 0):
    """A run config small enough to train in a few seconds on 2 cores."""
    return load_config(None, overrides=[*TINY, f"seed={seed}", f"name=tiny-{arm}", *extra], arm=arm)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture
def random_data():
    """A CIFAR-10-shaped synthetic data set (256 train, 128 test images): no disk, no download."""
    from dainv.data import random_dataset

    return random_dataset(256, 128)
