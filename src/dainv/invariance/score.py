"""Eq. 1 and Eq. 2 (docs/method.md): the distance and the invariance score, in memory and streamed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

__all__ = ["distance", "invariance_scores", "InvarianceMeter"]

#: Spread below this many float ulps of the mean squared activation counts as 0 (Eq. 2's
#: denominator here, Eq. 3's pair sums in :mod:`dainv.invariance.loss`).
_ULPS = 64


def _flat(a: torch.Tensor) -> torch.Tensor:
    """(B, ...) → (B, D) float32/float64."""
    a = a.reshape(a.shape[0], -1)
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for matched rows of two (N, ...) activations: (N,) ``d(a_i, b_i) = mean_u (a_iu − b_iu)²``."""
    if a.shape != b.shape:
        raise ValueError(f"distance needs matching shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (_flat(a) - _flat(b)).pow(2).mean(dim=1)


def invariance_scores(acts: torch.Tensor, acts_transformed: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Eq. 2 in memory, ``S = 1 − d(x_i, G(x_i)) / mean_j d(x_i, x_j)`` (j over all N, i
    included), for (N, ...) or (N, T, ...) transformed activations: (N,) or (N, T) float32, 1 =
    invariant; NaN where all images are identical at that layer, unless ``eps`` > 0.

    Example:
        >>> import torch
        >>> from dainv.invariance import invariance_scores
        >>> acts = torch.randn(100, 16)
        >>> invariance_scores(acts, acts).unique().tolist()       # unchanged → 1
        [1.0]
        >>> abs(float(invariance_scores(acts, acts.roll(1, 0)).mean())) < 0.2  # another image → ≈ 0
        True
    """
    n = acts.shape[0]
    x = acts.reshape(n, -1).double()
    single = acts_transformed.shape == acts.shape
    t = acts_transformed.reshape(n, 1 if single else acts_transformed.shape[1], -1).double()
    if t.shape[2] != x.shape[1]:
        raise ValueError(f"transformed activations {tuple(acts_transformed.shape)} do not match {tuple(acts.shape)}")
    sq = x.pow(2).sum(1)
    mean_vec = x.mean(0)
    denom = (sq - 2 * x @ mean_vec + sq.mean()) / x.shape[1]  # mean_j d(x_i, x_j)
    num = (t - x[:, None, :]).pow(2).mean(2)  # (N, T)
    scores = (1.0 - num / (denom[:, None] + eps)).float()
    return scores[:, 0] if single else scores


class InvarianceMeter:
    """Eq. 2 streamed over a data set for many layers: pass 1 (:meth:`update_reference`) sums
    the originals' activations and squared norms (O(D)); pass 2 (:meth:`update`) keeps per-image
    numbers only (O(N·T)); :meth:`compute` equals :func:`invariance_scores` to ~1e-5."""

    def __init__(self, layers: Iterable[str]) -> None:
        self.layers = tuple(layers)
        self._sum: dict[str, torch.Tensor] = {}
        self._sumsq: dict[str, torch.Tensor] = {}
        self._n = 0
        self._num: dict[str, list[torch.Tensor]] = {k: [] for k in self.layers}
        self._den: dict[str, list[torch.Tensor]] = {k: [] for k in self.layers}
        self._n_ref_final: int | None = None

    @torch.no_grad()
    def update_reference(self, acts: Mapping[str, torch.Tensor]) -> None:
        """Pass 1: a batch of activations of non-augmented images, {layer: (b, ...)}."""
        if self._n_ref_final is not None:
            raise RuntimeError("update_reference after update(): pass 1 must see the whole set first")
        b = 0
        for k in self.layers:
            x = _flat(acts[k])
            b = x.shape[0]
            # Batch sums in float32 (pairwise summation), running totals in float64.
            s, q = x.sum(0).double(), x.pow(2).sum().double()
            if k in self._sum:
                self._sum[k] += s
                self._sumsq[k] += q
            else:
                self._sum[k], self._sumsq[k] = s, q
        self._n += b

    @torch.no_grad()
    def update(self, acts: Mapping[str, torch.Tensor], acts_transformed: Mapping[str, torch.Tensor]) -> None:
        """Pass 2: originals {layer: (b, ...)} and their transformations {layer: (b, T, ...)}."""
        if self._n == 0:
            raise RuntimeError("update() before update_reference(): run pass 1 over the whole set first")
        self._n_ref_final = self._n
        for k in self.layers:
            x = _flat(acts[k])
            t = acts_transformed[k].reshape(x.shape[0], -1, x.shape[1])
            t = t if t.dtype == x.dtype else t.to(x.dtype)
            # Kept on the device: one copy to the host in compute(), not two per layer per batch.
            self._num[k].append((t - x[:, None, :]).pow(2).mean(2).double())
            mean_vec = (self._sum[k] / self._n).to(x.dtype)
            sq = x.pow(2).sum(1).double()
            cross = (x @ mean_vec).double()
            self._den[k].append((sq - 2 * cross + self._sumsq[k] / self._n) / x.shape[1])

    @property
    def count(self) -> int:
        """Number of images seen in pass 2 so far."""
        return sum(x.shape[0] for x in self._num[self.layers[0]])

    def compute(self) -> dict[str, np.ndarray]:
        """{layer: (N, T) float32 scores} in :meth:`update` order; NaN where Eq. 2 is undefined."""
        out = {}
        for k in self.layers:
            if not self._num[k]:
                raise RuntimeError("compute() before any update()")
            num, den = torch.cat(self._num[k]), torch.cat(self._den[k])
            # A denominator within a few ulps of the mean second moment is 0 up to rounding
            # (one test image, identical images): Eq. 2 is undefined there → NaN, not ±huge.
            floor = _ULPS * torch.finfo(torch.float32).eps * self._sumsq[k] / (self._n * self._sum[k].numel())
            den = torch.where(den > floor, den, torch.full_like(den, float("nan")))
            out[k] = (1.0 - num / den[:, None]).float()
        flat = torch.stack([v.reshape(-1) for v in out.values()]).cpu()  # one device→host copy
        return {k: flat[i].view(out[k].shape).numpy() for i, k in enumerate(out)}
