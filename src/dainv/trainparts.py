"""Pieces of the training recipe that hold no run state: the seed sampler, the global-batch
split, BatchNorm with frozen running statistics, and the single-view test accuracy."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from dainv.data import Dataset, images_to_float
from dainv.errors import ConfigError
from dainv.runtime import autocast, full_fp32

__all__ = ["SeedSampler", "split_batch", "frozen_bn_stats", "test_accuracy"]


def split_batch(batch_size: int, views: int, world: int) -> tuple[int, int]:
    """``train.batch_size`` is the GLOBAL batch: → (samples per rank, seeds per rank).

    The recipe (steps per epoch, samples per step) is then the same on 1 or N processes.
    """
    if batch_size % (world * views):
        raise ConfigError(
            f"invalid setting train.batch_size: the global batch {batch_size} must split into "
            f"{world} process(es) × {views} views per seed (a multiple of {world * views})"
        )
    per_rank = batch_size // world
    return per_rank, per_rank // views


class SeedSampler:
    """Seed images from a per-pass random permutation that continues across epochs (docs/method.md, training recipe).

    The state is two integers (pass, position): pass ``p`` uses the permutation drawn from
    seed ``(seed, p)``, so resuming needs no stored permutation. Under DDP every rank holds the
    same sampler, draws ``K × world`` seeds and keeps its own disjoint slice.
    """

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.seed, self.device = n, seed, device
        self.pass_index, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, p: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
        return torch.randperm(self.n, generator=g).to(self.device)

    def next(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            take = min(k, self.n - self.pos)
            parts.append(self._perm[self.pos : self.pos + take])
            self.pos += take
            k -= take
            if self.pos == self.n:
                self.pass_index, self.pos = self.pass_index + 1, 0
                self._perm = self._permutation(self.pass_index)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index, self.pos = int(state["pass_index"]), int(state["pos"])
        self._perm = self._permutation(self.pass_index)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm (batch statistics) that leaves the running statistics untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in bns]
    was_training = model.training
    model.train()
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s
        model.train(was_training)


@torch.no_grad()
def test_accuracy(
    model: nn.Module,
    data: Dataset,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    channels_last: bool = False,
) -> float:
    """Single-view top-1 accuracy on the test split, BN in eval mode."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, data.x_test.shape[0], batch_size):
        x = images_to_float(data.x_test[i : i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with full_fp32(), autocast(device, precision):  # TF32 only in a training step
            logits = model(x)
        correct += (logits.argmax(1) == data.y_test[i : i + batch_size]).sum()
    model.train(was)
    return correct.item() / data.x_test.shape[0]


