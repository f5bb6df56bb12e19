"""Training checkpoints across devices (issue 10.1): loaded to the CPU, RNG states restored on
their own generator type, CUDA states of a bigger node tolerated, damaged files explained."""

from __future__ import annotations

import json

import pytest
import torch

from dainv import checkpoint
from dainv.data import random_dataset
from dainv.errors import RunError
from dainv.train import Trainer, train

DATA = random_dataset(256, 128)


@pytest.fixture
def dai_cfg(tiny):
    """``dai_cfg(*extra)``: a tiny DAI run config, no monitoring batches, logging every step."""
    return lambda *extra: tiny("dai", "train.monitor_batches=0", "train.log_every=1", *extra)


def _stop_after(monkeypatch, n):
    orig = Trainer.train_step

    def step(self, *a):
        orig(self, *a)
        if self.step + 1 == n:
            self._stop_signal = 2

    monkeypatch.setattr(Trainer, "train_step", step)


def test_resume_with_rng_tensors_mapped_to_meta_would_break_a_device_load(tmp_path, monkeypatch, dai_cfg):
    """Old code loaded with map_location=<device>: every tensor, RNG states included, went
    there. Map anything that is not the CPU to `meta` (which has no data): only a loader that
    reads onto the CPU and moves the model/optimizer itself can resume."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    train(dai_cfg(), ref, quiet=True, data=DATA)
    with monkeypatch.context() as m:
        _stop_after(m, 3)
        with pytest.raises(KeyboardInterrupt):
            train(dai_cfg(), run, quiet=True, data=DATA)
    real = torch.load

    def load(f, *a, map_location=None, **k):
        if map_location != "cpu":  # e.g. torch.device("cuda") or the trainer's device
            map_location = "meta"
        return real(f, *a, map_location=map_location, **k)

    monkeypatch.setattr(torch, "load", load)
    train(None, run, resume=True, quiet=True, data=DATA)
    monkeypatch.setattr(torch, "load", real)
    a = real(ref / "checkpoints/final.pt", weights_only=False)["model"]
    b = real(run / "checkpoints/final.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # still bitwise on the same device


def test_restore_rng_from_other_devices():
    gen = torch.Generator().manual_seed(5)
    good = gen.get_state()
    state = {
        "torch_rng": torch.get_rng_state().to(torch.int64),  # not a byte tensor: converted
        "cuda_rng": [torch.zeros(16, dtype=torch.uint8)] * 8,  # an 8-GPU node: no crash here
        "aug_generator_device": "cpu",
        "step": 7,
    }
    assert checkpoint.restore_rng(state, gen, good.to(torch.int64)) == []
    assert torch.equal(gen.get_state(), good)
    # A generator state written on CUDA (Philox) cannot go into a CPU generator: reseeded, said.
    notes = checkpoint.restore_rng({**state, "aug_generator_device": "cuda"}, gen, torch.zeros(16, dtype=torch.uint8))
    assert notes and "reseeded" in notes[0]
    x = torch.rand(3, generator=gen)
    notes = checkpoint.restore_rng({**state, "aug_generator_device": "cuda"}, gen.manual_seed(5), torch.zeros(16))
    assert torch.equal(torch.rand(3, generator=gen), x)  # deterministic reseed


def test_trainer_checkpoint_is_the_public_format(tmp_path, tiny):
    train(tiny("baseline", "train.epochs=1", "train.monitor_batches=0"), tmp_path / "r", quiet=True, data=DATA)
    state = checkpoint.load_checkpoint(tmp_path / "r")
    assert state["format"] == checkpoint.FORMAT and state["epoch"] == 1
    assert state["aug_generator_device"] == "cpu" and "optimizer" in state and "history" in state
    model = checkpoint.build_from_checkpoint(state)
    assert not model.training


def test_damaged_last_checkpoint_names_the_other_checkpoints(tmp_path, monkeypatch, dai_cfg):
    run = tmp_path / "run"
    cfg = dai_cfg("train.epochs=3", "train.keep_epochs=[1]")
    with monkeypatch.context() as m:
        _stop_after(m, 5)  # mid-epoch 3
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run, quiet=True, data=DATA)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"cannot read checkpoint .*last.pt.*epoch-0001.pt.*cp .*epoch-0001.pt"):
        train(None, run, resume=True, quiet=True, data=DATA)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted"


@pytest.mark.parametrize("fmt", [None, 1, 3])
def test_a_checkpoint_of_another_format_is_refused(tmp_path, fmt):
    state = {"model": {}, "model_info": checkpoint.model_info("allcnnc", 10), "epoch": 1}
    if fmt is not None:
        state["format"] = fmt
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(RunError, match=f"format {fmt or 1}; this dainv reads format {checkpoint.FORMAT}"):
        checkpoint.load_checkpoint(tmp_path / "old.pt")
