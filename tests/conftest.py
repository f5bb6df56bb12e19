"""Shared fixtures: tiny run configs, synthetic CIFAR-shaped data, and the real CIFAR-10.

Tests run on synthetic data (``random_data``, ``random_npz``) unless they test something about
the real CIFAR-10 itself. Those ask for ``cifar10`` (the loaded data set) or ``cifar_root`` (its
folder, for the CLI and subprocesses that read ``$DAINV_DATA``) and are marked ``slow`` here, so
``pytest -m "not slow"`` (``make test-fast``) needs no data; ``make test`` runs everything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dainv.config import load_config

REPO = Path(__file__).resolve().parents[1]
# benchmarks/ is not a package: its operator counter (bench_ops.OpCounter) and trainer factory
# serve the tests that count what a step dispatches.
sys.path.insert(0, str(REPO / "benchmarks"))

# Under pytest-xdist (`make test`: one worker per core) each worker and the processes it starts
# compute with one thread: two workers at torch's default of a thread per core would oversubscribe.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Fixtures that read the real CIFAR-10: a test asking for one of them is marked slow.
REAL_DATA_FIXTURES = ("cifar10", "cifar_root")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(name in REAL_DATA_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """The folder holding the real ``cifar-10-batches-py/`` ($DAINV_DATA, else ../shared/data);
    skips the test when it is not there."""
    env = os.environ.get("DAINV_DATA")
    root = Path(env) if env else REPO.parent / "shared" / "data"
    if not (root / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR-10 not found under {root} (set DAINV_DATA)")
    return root


@pytest.fixture(scope="session")
def cifar10(cifar_root):
    """The real CIFAR-10, loaded once per test session."""
    from dainv.data import load_dataset

    return load_dataset("cifar10", cifar_root, download=False)


TINY = (
    "data.n_train=256",
    "data.n_test=128",
    "model.width=0.125",
    "train.epochs=2",
    "train.milestones=[1]",
    "train.precision=fp32",
    "train.monitor_batches=1",
    "train.log_every=2",
    "eval.batch_size=128",
)


def _tiny_config(arm: str = "dai", *extra: str, seed: int = 0):
    """A run config small enough to train in a few seconds on 2 cores."""
    return load_config(None, overrides=[*TINY, f"seed={seed}", f"name=tiny-{arm}", *extra], arm=arm)


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    """The ``key=value`` settings of a tiny run (256 training / 128 test images, width 1/8,
    2 epochs, fp32); a new list each time it is asked for."""
    return list(TINY)


@pytest.fixture(scope="session")
def tiny():
    """``tiny(arm="dai", *extra, seed=0)``: a run config from :func:`tiny_overrides`, plus
    ``extra`` overrides."""
    return _tiny_config


@pytest.fixture(scope="session")
def random_data():
    """A CIFAR-10-shaped synthetic data set (256 train, 128 test images): no disk, no download.
    Shared by the whole session: do not change its tensors in place."""
    from dainv.data import random_dataset

    return random_dataset(256, 128)


@pytest.fixture(scope="session")
def random_npz(tmp_path_factory, random_data) -> Path:
    """:func:`random_data` as an ``npz`` file, for runs configured by ``data.dataset=npz:PATH``
    (the CLI, reproduce, subprocesses)."""
    path = tmp_path_factory.mktemp("random-npz") / "random.npz"
    np.savez(
        path,
        x_train=random_data.x_train.permute(0, 2, 3, 1).numpy(),
        y_train=random_data.y_train.numpy(),
        x_test=random_data.x_test.permute(0, 2, 3, 1).numpy(),
        y_test=random_data.y_test.numpy(),
    )
    return path
