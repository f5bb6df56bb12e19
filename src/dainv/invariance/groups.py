"""Group membership of a batch (seeds, classes) for the DAI loss, precomputed once."""

from __future__ import annotations

import torch

__all__ = ["GroupIndex"]


class GroupIndex:
    """Group membership of a batch: ids 0..G-1, sizes, and ``block`` = M in the training layout (K seeds × M
    contiguous views). Build it once: ``GroupIndex(ids)`` waits for the device; ``GroupIndex.blocks(K, M)`` does not."""

    def __init__(self, ids: torch.Tensor) -> None:
        uniq, self.ids = torch.unique(ids, return_inverse=True)
        self.n = int(uniq.numel())
        self.counts = torch.bincount(self.ids, minlength=self.n)
        b = ids.shape[0]
        m = b // self.n
        contiguous = m * self.n == b and torch.equal(self.ids, torch.arange(self.n, device=ids.device).repeat_interleave(m))
        self.block = m if contiguous else 0
        self.n_pairs = float((self.counts * (self.counts - 1)).sum()) / 2
        self._weights: torch.Tensor | None = None

    @classmethod
    def blocks(cls, k: int, m: int, device: torch.device | str | None = None) -> GroupIndex:
        """The training layout, ``k`` seeds × ``m`` contiguous views, without a host sync."""
        g = cls.__new__(cls)
        g.ids = torch.arange(k, device=device).repeat_interleave(m)
        g.counts = torch.full((k,), m, dtype=torch.long, device=device)
        g.n, g.block, g.n_pairs, g._weights = k, m, k * m * (m - 1) / 2, None
        return g

    @property
    def size(self) -> int:
        """Number of samples B."""
        return self.ids.shape[0]

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        """(B,) the size of each sample's group."""
        if torch.compiler.is_compiling():  # no cached tensor made inside a (CUDA-graph) compiled step
            return self.counts[self.ids].to(dtype)
        if self._weights is None or self._weights.dtype != dtype:
            self._weights = self.counts[self.ids].to(dtype)
        return self._weights

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        """(G, D) per-group sums of the rows of x, in x's dtype."""
        if self.n == 1:
            return x.sum(0, keepdim=True)
        if self.block:
            return x.view(self.n, self.block, -1).sum(1)
        return torch.zeros(self.n, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, self.ids, x)

    def spread(self, per_group: torch.Tensor) -> torch.Tensor:
        """(G, D) → (B, D) view or gather: each sample's row of its group."""
        if self.n == 1:
            return per_group.expand(self.ids.shape[0], -1)
        if self.block:
            return per_group[:, None, :].expand(-1, self.block, -1).reshape(-1, per_group.shape[1])
        return per_group[self.ids]


class _ClassGroups(GroupIndex):
    """Same-class groups over a fixed number of classes, without host syncs (``index_add_``)."""

    block = 0

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.ids = labels
        self.n = num_classes
        ones = torch.ones(labels.shape[0], device=labels.device)
        self.counts = torch.zeros(num_classes, device=labels.device).index_add_(0, labels, ones)
        self.n_pairs = (self.counts * (self.counts - 1)).sum() / 2  # a tensor: no sync

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        return self.counts[self.ids].to(dtype)

    def sums(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.n, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, self.ids, x)

    def spread(self, per_group: torch.Tensor) -> torch.Tensor:
        return per_group[self.ids]
