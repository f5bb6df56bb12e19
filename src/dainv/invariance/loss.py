"""Eq. 3 and Eq. 4 (docs/method.md): the DAI loss of every tapped layer at once, and the total loss. All layers'
terms come from one autograd Function (a fixed ~40 operators whatever the number of layers), and with a
:class:`GroupIndex` a step neither syncs with the device nor builds a tensor from Python data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from dainv.invariance.groups import GroupIndex, _ClassGroups
from dainv.invariance.score import _ULPS, _flat

__all__ = ["DAI_EPS", "DAILoss", "Denominator", "dai_loss", "dai_loss_pairwise", "layer_weights"]

#: Added to the DAI loss denominator: when every sample of a batch has the same activation
#: (all-pair distance 0) the loss is 0 (and its gradient 0) instead of 0/0.
DAI_EPS = 1e-12
#: Eq. 3's denominator: all pairs of the batch (the paper) or same-class pairs (the authors' code).
Denominator = Literal["all", "same_class"]


# Per-layout constants (layer sizes, segment lengths, pair counts): built once, reused.
_CONSTS: dict[tuple, dict[str, torch.Tensor]] = {}


def _consts(sizes: tuple[int, ...], b: int, m: int, num_pairs: float, den_pairs: float | None, *, acc, device):
    key = (sizes, b, m, num_pairs, den_pairs, acc, str(device))
    c = _CONSTS.get(key)
    if c is None:
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        f64 = dict(dtype=torch.float64, device=device)
        d = torch.tensor(sizes, **f64)
        inv_num = 1.0 / (max(num_pairs, 1.0) * d)
        inv_den = 1.0 / (max(den_pairs or 1.0, 1.0) * d)
        z = torch.zeros_like(d)
        z2 = torch.stack([z, z])
        # One fill per layer, not repeat_interleave with a tensor of sizes: that output's shape
        # depends on tensor data, which breaks a compiled graph (train.compile's fullgraph).
        seg = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(sizes)])
        c = {
            "seg": seg,  # layer of each column
            # (S, L) 0/1: column u belongs to layer l. (3, S) @ it sums each layer's segment in
            # one GEMM; segment_reduce does the same, but its CUDA kernel sums each segment in
            # one thread (5.8 ms of a 9.5 ms step on an H200).
            "onehot": F.one_hot(seg, len(sizes)).to(torch.float64),
            "d": d,
            # training layout: (A @ per-layer [Σ‖x‖²; Σ_i (n_c(i)/M)‖x_i‖²; ‖Σx‖²; Σ_g‖s_g‖²;
            # Σ_c‖s_c‖²]) ⊙ scale4 = [w, t_all, t_same_class·P_same_class, floor]; any groups:
            # [w, t, floor] ⊙ scale (the same-class pair count of _ClassGroups is a tensor)
            "A": torch.tensor([[m, 0, 0, -1, 0], [b, 0, -1, 0, 0], [0, m, 0, 0, -1], [1, 0, 0, 0, 0]], **f64),
            # floor: a few float ulps of the mean squared activation Σ‖x‖² / (B·D)
            "scale": torch.stack([inv_num, inv_den, _ULPS * torch.finfo(acc).eps / (b * d)]),
            "scale4": torch.stack([inv_num, inv_den, 2.0 / (max(m, 1) ** 2 * d), _ULPS * torch.finfo(acc).eps / (b * d)]),
            # backward factors (4, 2, L) = A1·v + (A2 + A3 / p)·L·v with v = ok/(t + ε) and
            # p = P_same_class·2/M²: rows −a_w, −a_all, −a_same, −(M·a_w + B·a_all); columns: per
            # unit gradient of L_all, of L_same_class (dL/dw = 1/t, dL/dt = −L/t; d‖·‖² = 2·)
            "A1": torch.stack([torch.stack([inv_num, inv_num]), z2, z2, torch.stack([-m * inv_num, -m * inv_num])]) * -2.0,
            "A2": torch.stack([z2, torch.stack([-inv_den, z]), z2, torch.stack([b * inv_den, z])]) * -2.0,
            "A3": torch.stack([z2, z2, torch.stack([z, -2.0 / (m * m * d)]), z2]) * -2.0,
        }
        _CONSTS[key] = c
    return c


def _flat_view(a: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(B, ...) → (B, D) in memory order (a view for contiguous and channels-last tensors: the
    sums of Eq. 3 do not depend on the feature order), and the strides of one sample there."""
    b = a.shape[0]
    if a.dim() == 2 and a.stride(1) == 1 and a.stride(0) == a.shape[1]:
        return a, (1,)
    d = math.prod(a.shape[1:])
    dense = a.is_contiguous() or (a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last))
    if dense and a.stride(0) == d:
        return a.as_strided((b, d), (d, 1)), a.stride()[1:]
    return a.reshape(b, d), torch.empty(a.shape[1:], device="meta").stride()


def _same_class(seed_labels: torch.Tensor, m: int, b: int, acc: torch.dtype):
    """The (K, K) same-class matrix of the seeds, the number of seeds of each seed's class (K,)
    and p = Σ_g g − B/M² = 2·P_same_class/M², since Σ_c n_c² = M²·Σ_g g (tensors: no sync)."""
    same = (seed_labels[:, None] == seed_labels[None, :]).to(acc)
    return same, same.sum(1), same.sum() - b / (m * m)


def _snapped_ratio(wt: torch.Tensor, floor: torch.Tensor):
    """L = w / (t + ε) per denominator row of wt = [w, t, …] → (L, ok = t > 0, t + ε). n·Σ‖x‖² − ‖Σx‖² cancels: values
    at or below the floor (a few ulps of the mean second moment) snap to 0, so identical views give exactly 0."""
    wt = torch.where(wt > floor, wt, 0.0)
    tt = wt[1:] + DAI_EPS
    ok = wt[1:] > 0  # every sample identical (or no pair): loss 0 and gradient 0, no branch
    return wt[0] / tt * ok, ok, tt


def _concat(acts):
    """The activations as one (B, S = ΣD_l) matrix, each layer's size and per-sample strides."""
    flats, strides = zip(*(_flat_view(a) for a in acts))
    sizes = tuple(f.shape[1] for f in flats)
    x = flats[0] if len(flats) == 1 else torch.cat(flats, 1)
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return flats, strides, sizes, x, acc


def _split_grad(ctx, gx: torch.Tensor) -> list[torch.Tensor | None]:
    """The per-layer slices of the (…, S) gradient as views in each activation's layout."""
    sizes, strides, shapes = ctx.shapes
    # gx is a fresh tensor (storage offset 0); no storage_offset() call: compile-friendly
    offsets = itertools.accumulate(sizes, initial=0)
    return [  # the inputs after the two layout arguments
        gx.as_strided(shape, (gx.shape[-1], *st), off) if need else None
        for need, st, shape, off in zip(ctx.needs_input_grad[2:], strides, shapes, offsets)
    ]


def _rounded_once(bias: torch.Tensor, x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``bias + x·coef`` rounded once to the activations' dtype: in a nearly invariant layer the
    terms nearly cancel, and rounding each to bf16 first would err by a few % of the gradient."""
    return torch.addcmul(bias, x, coef, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))


def _no_autocast(fn):
    """A Function's forward/backward with autocast off: its sums stay in float32 or float64."""

    def wrapped(ctx, *args):
        dev = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(dev, enabled=False):
            return fn(ctx, *args)

    return wrapped


class _BlockTerms(torch.autograd.Function):
    """Eq. 3 for all layers in the training layout (K seeds × M views), both denominators, (2, L); the GPU path (few
    launches): column sums of the concatenated activations, per-layer totals by one float64 GEMM, fused backward."""

    @staticmethod
    @_no_autocast
    def forward(ctx, num, seed_labels, *acts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b = acts[0].shape[0]
        _, strides, sizes, x, acc = _concat(acts)
        c = _consts(sizes, b, num.block, num.n_pairs, b * (b - 1) / 2, acc=acc, device=x.device)
        xv = x.view(num.n, num.block, x.shape[1])
        s = xv.sum(1, dtype=acc)  # (K, S) seed sums s_g
        s_den = s.sum(0)  # (S,) batch sum
        same, g, p = _same_class(seed_labels, num.block, b, acc)
        s_ck = same @ s  # (K, S) each seed's class sum s_c(g): its views share its class
        qk = torch.linalg.vector_norm(xv, 2, dim=1, dtype=acc).square()  # (K, S) Σ over a seed's views
        ss = torch.stack([s, s_ck]).mul_(s).sum(1)  # (2, S): Σ_g s_gu², Σ_g s_gu s_c(g)u (= Σ_c s_cu²)
        cols = torch.cat([qk.sum(0)[None], (g @ qk)[None], s_den.square()[None], ss]).to(torch.float64)
        n_k = g * num.block  # (K,) size of each seed's class
        r = (c["A"] @ (cols @ c["onehot"])) * c["scale4"]  # [w, t_all, t_same_class·p, floor]
        r[2].div_(p)
        wt = torch.where(r[:3] > r[3], r[:3], 0.0)  # rounding noise, not spread (_snapped_ratio)
        v = (wt[1:] > 0) / (wt[1:] + DAI_EPS)  # every sample identical: loss 0 and gradient 0
        loss = wt[0] * v  # (2, L)
        if any(ctx.needs_input_grad[2:]):
            f = torch.addcmul(c["A1"] * v, torch.addcdiv(c["A2"], c["A3"], p), loss * v)
            # x, not its (K, M, S) view xv: a compiled graph cannot save a view made inside it
            ctx.save_for_backward(x, s, s_den, s_ck, n_k, f.to(acc), c["seg"])
            ctx.shapes = (sizes, strides, [a.shape for a in acts])
            ctx.block = xv.shape
        return loss.to(acc)

    @staticmethod
    @_no_autocast
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, s, s_den, s_ck, n_k, f, seg = ctx.saved_tensors
        xv = x.view(ctx.block)
        # per column: −a_w (the shared numerator), −a_all, −a_same, −(M·a_w + B·a_all)
        f = (f * grad).sum(1).index_select(1, seg)
        coef = torch.addr(f[3], n_k, f[2], alpha=-1)  # (K, S) coefficient of x_i
        bias = torch.addcmul(torch.addcmul(s_den * f[1], s, f[0]), s_ck, f[2])  # (K, S)
        # (K, M, S): one pass over the activations, in the coefficients' precision (_rounded_once)
        gx = _rounded_once(bias[:, None], xv, coef[:, None])
        return (None, None, *_split_grad(ctx, gx.view(-1, gx.shape[-1])))


class _DAITerms(torch.autograd.Function):
    """Eq. 3 for all layers, any groups, one denominator, with a hand-written one-pass backward."""

    @staticmethod
    def forward(ctx, num, den, *acts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b = acts[0].shape[0]
        flats, strides, sizes, x, acc = _concat(acts)
        den_pairs = b * (b - 1) / 2 if den is None else (den.n_pairs if isinstance(den.n_pairs, float) else None)
        c = _consts(sizes, b, 0, num.n_pairs, den_pairs, acc=acc, device=x.device)
        xa = x.to(acc)
        s = num.sums(xa)  # (G, S) group sums s_g
        s_den = xa.sum(0) if den is None else den.sums(xa)  # the batch sum, or the class sums
        cols = torch.stack([  # per column u: ‖x_{·u}‖, ‖s_{·u}‖ and the norm of the denominator's sums
            torch.linalg.vector_norm(xa, 2, dim=0),
            torch.linalg.vector_norm(s, 2, dim=0),
            torch.linalg.vector_norm(s_den.view(-1, x.shape[1]), 2, dim=0),
        ]).to(torch.float64)
        stats = (cols * cols) @ c["onehot"]  # [Σ‖x‖²; Σ_g‖s_g‖²; Σ‖s_den‖²] per layer: (3, L)
        qs = torch.stack([torch.linalg.vector_norm(f, dim=1, dtype=acc) for f in flats], 1)
        qs = (qs * qs).to(torch.float64)  # (B, L) ‖x_i‖², weighted below by each sample's group sizes
        wn = num.weights(torch.float64)
        wd = torch.full_like(wn, b) if den is None else den.weights(torch.float64)
        pairs = torch.stack([wn @ qs, wd @ qs, stats[0]]) - torch.cat([stats[1:], torch.zeros_like(stats[:1])])
        scale = c["scale"]  # per layer: 1/(P_w·D), 1/(P_t·D), floor
        if den_pairs is None:  # the same-class pair count is a tensor: no sync
            inv_den = 1.0 / (den.n_pairs.clamp(min=1).double() * c["d"])
            scale = torch.stack([scale[0], inv_den, scale[2]])
        r = pairs * scale  # [w, t, floor]
        loss, ok, tt = (v[0] for v in _snapped_ratio(r[:2], r[2]))
        if any(ctx.needs_input_grad[2:]):
            u = ok / tt * -2.0  # negated gradient factors: −a_w = u·inv_num, −a_t = −L·u·inv_den
            k = torch.stack([u * scale[0], -loss * u * scale[1]]).to(acc)
            ctx.save_for_backward(x, s, s_den, k, c["seg"])
            ctx.layout = (num, den, b)
            ctx.shapes = (sizes, strides, [a.shape for a in acts])
        return loss.to(acc)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        xv, s, s_den, k, seg = ctx.saved_tensors
        num, den, b = ctx.layout
        acc = s.dtype
        n_w, n_t = (k * grad).index_select(1, seg).unbind(0)
        wn = num.weights(acc)[:, None]
        wd = torch.full_like(wn, b) if den is None else den.weights(acc)[:, None]
        coef = wn * n_w + wd * n_t  # (B, S), negated
        other = s_den * n_t if den is None else den.spread(s_den * n_t)
        gx = (num.spread(s * n_w) + other - coef * xv.to(acc)).to(xv.dtype)
        return (None, None, *_split_grad(ctx, gx))


class _LayerTerms(torch.autograd.Function):
    """Eq. 3 for one layer in the training layout, both denominators: the CPU path (memory traffic sets the cost):
    two passes over the activations, then the seed sums' Gram matrix; class sums in backward only if ``sc_grad``."""

    @staticmethod
    @_no_autocast
    def forward(ctx, a: torch.Tensor, k: int, m: int, classes, sc_grad: bool) -> torch.Tensor:  # type: ignore[override]
        same, g, p = classes
        x, st = _flat_view(a)
        b, d = x.shape
        acc, f64 = same.dtype, torch.float64
        qk = torch.linalg.vector_norm(x, dim=1, dtype=acc).to(f64).pow(2).view(k, m).sum(1)  # (K,) Σ_{i∈k}‖x_i‖²
        s = x.view(k, m, d).sum(1, dtype=acc)  # (K, D) seed sums
        gram = (s @ s.T).to(f64)  # (K, K) s_g·s_h
        q = qk.sum()
        ss, sa, sc = gram.trace(), gram.sum(), (gram * same).sum()  # Σ_g‖s_g‖², ‖Σx‖², Σ_c‖s_c‖²
        n_k = (g * m).to(f64)  # (K,) size of each seed's class
        inv_w, inv_a = 1.0 / (k * m * (m - 1) / 2 * d), 1.0 / (b * (b - 1) / 2 * d)
        inv_s = 2.0 / (m * m * d) / p.to(f64)
        floor = q * (_ULPS * torch.finfo(acc).eps / (b * d))
        r = torch.stack([(m * q - ss) * inv_w, (b * q - sa) * inv_a, (torch.dot(n_k, qk) - sc) * inv_s])
        loss, ok, tt = _snapped_ratio(r, floor)  # [L_all, L_same_class]
        if ctx.needs_input_grad[0]:
            u = ok / tt * -2.0
            ctx.save_for_backward(x, s, same, n_k, u, loss, inv_s)
            ctx.layout = (k, m, a.shape, (d, *st), inv_w, inv_a, sc_grad)
        return loss.to(acc)

    @staticmethod
    @_no_autocast
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, s, same, n_k, u, loss, inv_s = ctx.saved_tensors
        k, m, shape, strides, inv_w, inv_a, sc_grad = ctx.layout
        gu = grad.to(u.dtype) * u
        n_w = gu.sum() * inv_w  # −a_w: the numerator is shared by both ratios
        n_a, n_s = -gu[0] * loss[0] * inv_a, -gu[1] * loss[1] * inv_s  # −a_t of each denominator
        acc = s.dtype
        bias = torch.addcmul(s.sum(0) * n_a.to(acc), s, n_w.to(acc))  # (K, D)
        if sc_grad:  # the same-class ratio is trained: its class sums and per-seed coefficient
            coef = (-(m * n_w + k * m * n_a) - n_k * n_s).to(acc)[:, None, None]  # (K, 1, 1)
            bias = torch.addcmul(bias, same @ s, n_s.to(acc))
        else:  # its gradient is 0: one coefficient for every seed
            coef = (-(m * n_w + k * m * n_a)).to(acc)
        gx = _rounded_once(bias[:, None, :], x.view(k, m, -1), coef)  # one pass over the activations
        return gx.as_strided(shape, strides), None, None, None, None


def _dai_terms(
    acts, num: GroupIndex, den, fused: bool = True, seed_labels: torch.Tensor | None = None, sc_grad: bool = True
) -> torch.Tensor:
    """L_l per layer: ``seed_labels`` (training layout): both denominators, (2, L); else ``den`` (None: all), (L,)."""
    n_ids = num.size
    for a in acts:
        if a.shape[0] != n_ids:
            raise ValueError(f"{a.shape[0]} activations but {n_ids} group ids")
    if seed_labels is None:
        return _DAITerms.apply(num, den, *acts)
    if fused:
        return _BlockTerms.apply(num, seed_labels, *acts)
    acc = torch.float64 if acts[0].dtype == torch.float64 else torch.float32
    classes = _same_class(seed_labels, num.block, num.size, acc)
    return torch.stack([_LayerTerms.apply(a, num.n, num.block, classes, sc_grad) for a in acts], 1)


def _labels_follow_seeds(labels: torch.Tensor, num: GroupIndex) -> bool:
    y = labels.view(num.n, num.block)
    return bool((y == y[:, :1]).all())


def _seed_labels(labels: torch.Tensor, num: GroupIndex) -> torch.Tensor:
    """(K,) each seed's class, its first view's label; that its views share it is asserted on the device."""
    y = labels.view(num.n, num.block)
    torch._assert_async(
        (y == y[:, :1]).all(),
        "DAILoss: with GroupIndex.blocks(K, M) every view of a seed must carry its seed's label; "
        "for another layout pass a GroupIndex built from seed ids",
    )
    return y[:, 0]


def dai_loss(
    acts: torch.Tensor, groups: torch.Tensor | GroupIndex, labels: torch.Tensor | GroupIndex | None = None,
    denominator: Denominator = "all",
) -> torch.Tensor:  # fmt: skip
    """Eq. 3 for one layer (B, ...) with a seed id (or :class:`GroupIndex`) per sample: mean
    within-seed pair distance / mean all-pair distance (``"same_class"``: pairs of one label, the
    authors' code), over pairs i < j, so independent of B and M; O(B·D), sums in float32 (float64
    for float64 input). For many layers and a sync-free step use :class:`DAILoss`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> seeds = torch.randn(4, 32)
        >>> views = seeds.repeat_interleave(2, 0)          # 4 seeds × 2 identical views
        >>> float(dai_loss(views, torch.arange(4).repeat_interleave(2)))
        0.0
        >>> views = views + 0.1 * torch.randn(8, 32)       # views differ a little
        >>> 0 < float(dai_loss(views, torch.arange(4).repeat_interleave(2))) < 0.1
        True
    """
    n_ids = groups.size if isinstance(groups, GroupIndex) else groups.shape[0]
    if acts.shape[0] != n_ids:
        raise ValueError(f"{acts.shape[0]} activations but {n_ids} group ids")
    if denominator not in get_args(Denominator):
        raise ValueError(f"denominator must be 'all' or 'same_class', got {denominator!r}")
    num = groups if isinstance(groups, GroupIndex) else GroupIndex(groups)
    if num.n_pairs == 0:
        raise ValueError("dai_loss needs at least two views of some seed in the batch (M >= 2)")
    den = None
    if denominator == "same_class":
        if labels is None:
            raise ValueError("denominator='same_class' needs labels")
        den = labels if isinstance(labels, GroupIndex) else GroupIndex(labels)
        if den.n_pairs == 0:
            raise ValueError("denominator='same_class' needs two samples of some class in the batch")
    if den is None and num.block:  # the training layout's fast path; one class: row 0 is all pairs
        return _dai_terms([acts], num, None, acts.device.type != "cpu", num.ids.new_zeros(num.n), False)[0, 0]
    return _dai_terms([acts], num, den)[0]


class DAILoss(torch.nn.Module):
    """The total loss of Eq. 4, ``(1 − α)·CE + Σ_l α_l·L_l``, over ``layers`` (names in depth
    order, or their number); α_l by :func:`layer_weights`. Without host syncs when ``groups`` is
    a :class:`GroupIndex`; with ``alpha=0`` the L_l are still computed, without gradient, for
    logging. ``fused``: all layers in one pass (the GPU path) or layer by layer (less memory
    traffic: the CPU path); ``None`` picks by the activations' device.

    Example:
        >>> crit = DAILoss(["a", "b"], alpha=0.1)
        >>> groups = GroupIndex.blocks(4, 2)                  # 4 seeds × 2 views
        >>> logits, labels = torch.randn(8, 3), torch.arange(4).repeat_interleave(2) % 3
        >>> acts = {"a": torch.randn(8, 5, 4, 4), "b": torch.randn(8, 7)}
        >>> loss, parts = crit(logits, labels, acts, groups)
        >>> parts["dai"].shape
        torch.Size([2])
    """

    def __init__(
        self, layers: Sequence[str] | int, alpha: float = 0.1, ratio: float = 10.0, denominator: Denominator = "all",
        fused: bool | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if denominator not in get_args(Denominator):
            raise ValueError(f"denominator must be 'all' or 'same_class', got {denominator!r}")
        self.fused = fused
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.layers: tuple[str, ...] | None = None if isinstance(layers, int) else tuple(layers)
        n = layers if isinstance(layers, int) else len(self.layers)
        self.alpha, self.ratio, self.denominator = float(alpha), float(ratio), denominator
        self.alphas = layer_weights(n, alpha, ratio)
        # A buffer moves with .to(device): a compiled or CUDA-graph step must not build it.
        # (2, L): α_l on the row of the trained denominator ([all pairs; same class]), 0 on the
        # other, which is logged only: the loss is one dot product with both rows.
        rows = [self.alphas, [0.0] * n]
        self.register_buffer(
            "alpha_weights", torch.tensor(rows[::-1] if denominator == "same_class" else rows), persistent=False
        )
        self._weights: dict[str, torch.Tensor] = {}
        self._groups: tuple[torch.Tensor, int, GroupIndex] | None = None

    def extra_repr(self) -> str:
        return f"layers={self.layers}, alpha={self.alpha}, ratio={self.ratio}, denominator={self.denominator!r}"

    def _weight(self, device: torch.device) -> torch.Tensor:
        if self.alpha_weights.device == device:
            return self.alpha_weights
        w = self._weights.get(str(device))
        if w is None:  # a loss left on another device: copied once per device, not per step
            w = self._weights[str(device)] = self.alpha_weights.to(device)
        return w

    def _in_layer_order(self, acts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The activations as a list in layer order (by name from a mapping), one per α_l."""
        if isinstance(acts, Mapping):
            names = self.layers if self.layers is not None else tuple(acts)
            missing = [n for n in names if n not in acts]
            if missing:
                raise ValueError(f"DAILoss: no activations for layer(s) {missing}; got {list(acts)}")
            acts = [acts[n] for n in names]
        if len(acts) != len(self.alphas):
            raise ValueError(f"DAILoss was built for {len(self.alphas)} layers, got {len(acts)} activations")
        return list(acts)

    def _group_index(self, groups: torch.Tensor | GroupIndex) -> GroupIndex:
        cached = self._groups
        if isinstance(groups, GroupIndex):
            g = groups
        elif cached is not None and cached[0] is groups and cached[1] == groups._version:
            return cached[2]
        else:
            g = GroupIndex(groups)  # unique/bincount: waits for the device; pass a GroupIndex
        if g.n_pairs == 0:
            raise ValueError("the DAI loss needs at least two views of some seed in the batch (M >= 2)")
        if g is not groups:
            self._groups = (groups, groups._version, g)
        return g

    def forward(
        self, logits: torch.Tensor, labels: torch.Tensor, acts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        groups: torch.Tensor | GroupIndex,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """``(loss, parts)`` of one batch: ``parts`` holds the detached ``ce``, ``dai`` (L_l under the loss's
        denominator), ``dai_all``, ``dai_same_class`` and ``dai_both`` (2, L): both are logged (Figure 2 plots the
        same-class one). ``groups``: a :class:`GroupIndex` (no sync) or seed ids (indexed once, then cached)."""
        xs = self._in_layer_order(acts)
        num = self._group_index(groups)
        same = self.denominator == "same_class"
        ce = F.cross_entropy(logits.float(), labels)
        with torch.set_grad_enabled(self.alpha > 0 and torch.is_grad_enabled()):
            fused = self.fused if self.fused is not None else xs[0].device.type != "cpu"
            # Seed ids given as a tensor have cost a sync already (GroupIndex): check the labels
            # too, and take the general path where a seed's views carry different labels.
            if num.block and (isinstance(groups, GroupIndex) or _labels_follow_seeds(labels, num)):
                both = _dai_terms(xs, num, None, fused, _seed_labels(labels, num), sc_grad=same)
            else:  # any layout: the trained denominator with gradient, the other one logged
                classes = _ClassGroups(labels, logits.shape[1])
                terms = _dai_terms(xs, num, classes if same else None)
                with torch.no_grad():
                    other = _dai_terms(xs, num, None if same else classes)
                both = torch.stack([other, terms] if same else [terms, other])
        if self.alpha > 0:
            w = self._weight(both.device).to(both.dtype)
            loss = torch.add(torch.dot(w.view(-1), both.view(-1)), ce, alpha=1.0 - self.alpha)
        else:
            loss = ce
        both = both.detach()
        parts = {"ce": ce.detach(), "dai": both[int(same)], "dai_all": both[0], "dai_same_class": both[1]}
        return loss, {**parts, "dai_both": both}


def dai_loss_pairwise(
    acts: torch.Tensor, groups: torch.Tensor, labels: torch.Tensor | None = None, denominator: Denominator = "all"
) -> torch.Tensor:
    """Eq. 3 through the full B×B distance matrix: O(B²·D). A reference and a benchmark only."""
    x = _flat(acts)
    sq = x.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp(min=0) / x.shape[1]
    upper = torch.ones_like(dist, dtype=torch.bool).triu(1)
    same = (groups[:, None] == groups[None, :]) & upper
    other = upper if denominator == "all" else (labels[:, None] == labels[None, :]) & upper
    return dist[same].mean() / (dist[other].mean() + DAI_EPS)


def layer_weights(n_layers: int, alpha: float = 0.1, ratio: float = 10.0) -> list[float]:
    """Eq. 4: the L = ``n_layers`` weights α_l = α·r^((l−1)/(L−1)) / Σ_m r^((m−1)/(L−1)) in
    layer order; they sum to α = ``alpha``, and the last weighs r = ``ratio`` × the first."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if n_layers == 1:
        return [float(alpha)]
    raw = [ratio ** (i / (n_layers - 1)) for i in range(n_layers)]
    total = sum(raw)
    return [alpha * r / total for r in raw]
