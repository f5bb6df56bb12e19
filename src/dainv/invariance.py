"""The equations of SPEC §2, one function each.

* Eq. 1 — :func:`distance`: mean squared difference of two activations.
* Eq. 2 — :func:`invariance_scores` (a set in memory) and :class:`InvarianceMeter` (the same,
  streamed over a data set): ``S = 1 − d(x, G(x)) / mean_j d(x, x_j)``.
* Eq. 3 — :func:`dai_loss`: mean within-seed pair distance over mean all-pair distance.
* Eq. 4 — :func:`layer_weights`: the exponential per-layer weights α_l.

Nothing here builds a B×B or N×N matrix. The sums over pairs use
``Σ_{i<j∈S} ‖a_i − a_j‖² = n·Σ_{i∈S} ‖a_i − ā_S‖² (= n·Σ‖a_i‖² − ‖Σ a_i‖²)``
and the mean distance to a set uses
``Σ_j ‖a_i − a_j‖² = N‖a_i‖² − 2 a_i·Σ_j a_j + Σ_j ‖a_j‖²``.
All sums are taken in float32 (float64 where the caller passes it), also under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

__all__ = [
    "distance",
    "dai_loss",
    "dai_loss_pairwise",
    "GroupIndex",
    "layer_weights",
    "invariance_scores",
    "InvarianceMeter",
    "DAI_EPS",
]

#: Added to the DAI loss denominator: when every sample of a batch has the same activation
#: (all-pair distance 0) the loss is 0 (and its gradient 0) instead of 0/0.
DAI_EPS = 1e-12
# Spread below this many float ulps of the mean squared activation counts as 0 in dai_loss.
_ULPS = 64


def _flat(a: torch.Tensor, memory_order: bool = False) -> torch.Tensor:
    """(B, ...) → (B, D) float32/float64. With ``memory_order``, a channels-last activation is
    flattened as stored (H, W, C) — a view, not a copy. Only for sums that do not care about
    feature order within one call (Eq. 1, Eq. 3)."""
    if memory_order and a.dim() == 4 and not a.is_contiguous() and a.is_contiguous(
        memory_format=torch.channels_last
    ):
        a = a.permute(0, 2, 3, 1)
    a = a.reshape(a.shape[0], -1)
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for matched rows: ``d(a_i, b_i) = mean_u (a_iu − b_iu)²``; (N, ...) × (N, ...) → (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"distance needs matching shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (_flat(a) - _flat(b)).pow(2).mean(dim=1)


def _dense_ids(ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    uniq, inv = torch.unique(ids, return_inverse=True)
    return inv, int(uniq.numel())


class GroupIndex:
    """Group membership of a batch: ids 0..G-1, sizes, and whether it is the contiguous
    equal-size layout of a training batch (``K`` seeds × ``M`` views), which needs no gather.

    Build it once and pass it to :func:`dai_loss` for every layer of a step (instead of the
    id tensor) to save the per-call bookkeeping.
    """

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids, self.n = _dense_ids(ids)
        self.counts = torch.bincount(self.ids, minlength=self.n)
        b = ids.shape[0]
        m = b // self.n
        self.block = (
            m if m * self.n == b and torch.equal(self.ids, torch.arange(self.n, device=ids.device).repeat_interleave(m)) else 0
        )
        self.counts_f64 = self.counts.double()
        self.all_index: GroupIndex | None = None  # the one-group index of the same batch, cached
        self.n_pairs = float((self.counts * (self.counts - 1)).sum()) / 2

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


def _pair_sum(q: torch.Tensor, s: torch.Tensor, g: GroupIndex) -> torch.Tensor:
    """Σ_groups Σ_{i<j} ‖x_i − x_j‖² = Σ_g (n_g·Σ_{i∈g}‖x_i‖² − ‖s_g‖²), from the per-sample
    squared norms ``q`` ((B,), float64) and group sums ``s`` (G, D); a float64 scalar."""
    s_sq = torch.linalg.vector_norm(s, dim=1, dtype=torch.float64).pow(2)  # (G,), small: exact-ish
    return (g.counts_f64[g.ids] * q).sum() - s_sq.sum()


class _DAILoss(torch.autograd.Function):
    """Eq. 3 with a hand-written backward: two reads of the activations forward, one fused
    multiply-add backward. Generic autograd would keep several B×D temporaries alive."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, num: GroupIndex, den: GroupIndex, same_partition: bool) -> torch.Tensor:
        d = x.shape[1]
        q = torch.linalg.vector_norm(x, dim=1).double().pow(2)  # (B,) ‖x_i‖²
        s_num = num.sums(x)  # (G, D)
        s_den = s_num.sum(0, keepdim=True) if same_partition else den.sums(x)
        w = _pair_sum(q, s_num, num) / (num.n_pairs * d)
        t = _pair_sum(q, s_den, den) / (den.n_pairs * d)
        # n·Σ‖x‖² − ‖Σx‖² cancels: values within a few ulps of the mean second moment are
        # rounding noise, not spread. Snap them to 0 so identical views give exactly 0.
        floor = _ULPS * torch.finfo(x.dtype).eps * q.mean() / d
        w = torch.where(w > floor, w, torch.zeros_like(w))
        t = torch.where(t > floor, t, torch.zeros_like(t))
        loss = w / (t + DAI_EPS)
        ctx.save_for_backward(x, s_num, s_den)
        ctx.groups = (num, den, same_partition)
        ctx.scalars = (w, t, d)
        return loss.to(torch.float64 if x.dtype == torch.float64 else torch.float32)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, s_num, s_den = ctx.saved_tensors
        num, den, same_partition = ctx.groups
        w, t, d = ctx.scalars
        # Every sample identical (t snapped to 0): the loss is constant 0 around here, so the
        # gradient is 0 — by a factor, not a branch, to keep the step free of host syncs.
        g = grad.double() * (t > 0)
        # ∂w/∂x_i = 2(n_g x_i − s_g)/(P_w D), ∂t/∂x_i = 2(n_c x_i − s_c)/(P_t D);
        # grad_i = (a_w n_g + a_t n_c)·x_i − (a_w s_g + a_t s_c).
        a_w = g * 2 / (num.n_pairs * d * (t + DAI_EPS))
        a_t = -g * 2 * w / ((t + DAI_EPS) ** 2 * den.n_pairs * d)
        aw, at = a_w.to(x.dtype), a_t.to(x.dtype)
        if num.block and (same_partition or den.n == 1):
            # Training layout: one fused pass over x, bias broadcast over each seed's views.
            coef = (a_w * num.block + a_t * x.shape[0]).to(x.dtype)
            neg_bias = torch.add(s_num * -aw, s_den * -at)  # (G, D), small
            out = torch.addcmul(neg_bias[:, None, :], x.view(num.n, num.block, -1), coef)
            return out.view_as(x), None, None, None
        coef = aw * num.counts.to(x.dtype)[num.ids] + at * den.counts.to(x.dtype)[den.ids]  # (B,)
        neg_bias = num.spread(s_num * -aw) + den.spread(s_den * -at)
        return torch.addcmul(neg_bias, x, coef[:, None]), None, None, None


def _all_index(num: GroupIndex) -> GroupIndex:
    if num.all_index is None:
        num.all_index = GroupIndex(torch.zeros_like(num.ids))
    return num.all_index


def dai_loss(
    acts: torch.Tensor,
    groups: torch.Tensor | GroupIndex,
    labels: torch.Tensor | GroupIndex | None = None,
    denominator: str = "all",
) -> torch.Tensor:
    """Eq. 3 for one layer: mean within-seed pair distance / mean all-pair distance.

    ``acts`` (B, ...) are one layer's activations; ``groups`` (B,) a seed id per sample, in any
    order (views need not be contiguous). Both means run over distinct unordered pairs i < j,
    so the value does not depend on B or the number of views M. With
    ``denominator="same_class"`` the denominator runs over pairs of the same ``labels`` (the
    authors' released code) instead of all pairs (the paper, default).

    Differentiable through numerator and denominator; O(B·D) time and memory through
    ``Σ_{i<j∈S} ‖a_i − a_j‖² = n·Σ_{i∈S}‖a_i‖² − ‖Σ_{i∈S} a_i‖²``. Sums run in float32
    (bf16 input is upcast; float64 input stays float64) and are combined in float64. Returns a
    float32 scalar (float64 for float64 input). A batch with no two views of one seed raises;
    a batch of identical activations gives 0 (see :data:`DAI_EPS`).
    """
    n_ids = groups.ids.shape[0] if isinstance(groups, GroupIndex) else groups.shape[0]
    if acts.shape[0] != n_ids:
        raise ValueError(f"{acts.shape[0]} activations but {n_ids} group ids")
    if denominator not in ("all", "same_class"):
        raise ValueError(f"denominator must be 'all' or 'same_class', got {denominator!r}")
    x = _flat(acts, memory_order=True)
    if not x.is_contiguous():
        x = x.contiguous()
    num = groups if isinstance(groups, GroupIndex) else GroupIndex(groups)
    if num.n_pairs == 0:
        raise ValueError("dai_loss needs at least two views of some seed in the batch (M >= 2)")
    if denominator == "all":
        den = _all_index(num)
    else:
        if labels is None:
            raise ValueError("denominator='same_class' needs labels")
        den = labels if isinstance(labels, GroupIndex) else GroupIndex(labels)
        if den.n_pairs == 0:
            raise ValueError("denominator='same_class' needs two samples of some class in the batch")
    return _DAILoss.apply(x, num, den, denominator == "all")


def dai_loss_pairwise(
    acts: torch.Tensor,
    groups: torch.Tensor,
    labels: torch.Tensor | None = None,
    denominator: str = "all",
) -> torch.Tensor:
    """Eq. 3 through the full B×B distance matrix: O(B²·D). A reference and a benchmark only."""
    x = _flat(acts)
    sq = x.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0) / x.shape[1]
    upper = torch.ones_like(dist, dtype=torch.bool).triu(1)
    same = (groups[:, None] == groups[None, :]) & upper
    if denominator == "all":
        other = upper
    else:
        other = (labels[:, None] == labels[None, :]) & upper
    return dist[same].mean() / (dist[other].mean() + DAI_EPS)


def layer_weights(n_layers: int, alpha: float = 0.1, ratio: float = 10.0) -> list[float]:
    """Eq. 4: α_l = α·r^((l−1)/(L−1)) / Σ_m r^((m−1)/(L−1)); the last layer weighs ``ratio``× the first."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if n_layers == 1:
        return [float(alpha)]
    raw = [ratio ** (i / (n_layers - 1)) for i in range(n_layers)]
    total = sum(raw)
    return [alpha * r / total for r in raw]


def invariance_scores(
    acts: torch.Tensor,
    acts_transformed: torch.Tensor,
    eps: float = 0.0,
) -> torch.Tensor:
    """Eq. 2 for a set held in memory.

    ``acts`` (N, ...) are the activations of the N non-augmented images; ``acts_transformed``
    is (N, ...) or (N, T, ...) — T transformations of each. Returns (N,) or (N, T) scores
    ``1 − d(x_i, G(x_i)) / mean_j d(x_i, x_j)``, the mean over all N originals (j = i included).
    An image whose mean distance is 0 (all images identical at that layer) gets NaN unless
    ``eps`` > 0.
    """
    n = acts.shape[0]
    x = acts.reshape(n, -1).double()
    single = acts_transformed.shape == acts.shape
    t = acts_transformed.reshape(n, 1 if single else acts_transformed.shape[1], -1).double()
    if t.shape[2] != x.shape[1]:
        raise ValueError(
            f"transformed activations {tuple(acts_transformed.shape)} do not match {tuple(acts.shape)}"
        )
    d = x.shape[1]
    sq = x.pow(2).sum(1)
    mean_vec = x.mean(0)
    denom = (sq - 2 * x @ mean_vec + sq.mean()) / d  # mean_j d(x_i, x_j)
    num = (t - x[:, None, :]).pow(2).mean(2)  # (N, T)
    scores = 1.0 - num / (denom[:, None] + eps)
    scores = scores.float()
    return scores[:, 0] if single else scores


class InvarianceMeter:
    """Eq. 2 streamed over a data set, for many layers at once, in two passes.

    Pass 1 (:meth:`update_reference`) accumulates, per layer, the sum of activations and of
    squared norms of the N non-augmented images — O(D) memory. Pass 2 (:meth:`update`) takes a
    batch of originals and their T transformations and stores only the per-image numerator
    ``d(x_i, G(x_i))`` and ``‖x_i‖²``, ``x_i·Σ_j x_j`` — O(N·T) numbers per layer. :meth:`compute`
    returns what :func:`invariance_scores` gives on the whole set (per-batch sums in float32,
    running totals in float64: agreement to ~1e-5).

    Memory is bounded by the batch plus O(D + N·T) per layer: never N×D or N×N.
    """

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
    def update(
        self, acts: Mapping[str, torch.Tensor], acts_transformed: Mapping[str, torch.Tensor]
    ) -> None:
        """Pass 2: originals {layer: (b, ...)} and their transformations {layer: (b, T, ...)}."""
        if self._n == 0:
            raise RuntimeError("update() before update_reference(): run pass 1 over the whole set first")
        self._n_ref_final = self._n
        for k in self.layers:
            x = _flat(acts[k])
            t = acts_transformed[k]
            t = t.reshape(x.shape[0], -1, x.shape[1])
            t = t if t.dtype == x.dtype else t.to(x.dtype)
            d = x.shape[1]
            self._num[k].append((t - x[:, None, :]).pow(2).mean(2).double().cpu())
            mean_vec = (self._sum[k] / self._n).to(x.dtype)
            sq = x.pow(2).sum(1).double()
            cross = (x @ mean_vec).double()
            denom = (sq - 2 * cross + self._sumsq[k] / self._n) / d
            self._den[k].append(denom.cpu())

    @property
    def count(self) -> int:
        """Number of images seen in pass 2 so far."""
        first = self.layers[0]
        return sum(x.shape[0] for x in self._num[first])

    def compute(self) -> dict[str, np.ndarray]:
        """{layer: (N, T) float32 scores}, images in the order given to :meth:`update`."""
        out = {}
        for k in self.layers:
            if not self._num[k]:
                raise RuntimeError("compute() before any update()")
            num = torch.cat(self._num[k])
            den = torch.cat(self._den[k])
            out[k] = (1.0 - num / den[:, None]).float().numpy()
        return out
