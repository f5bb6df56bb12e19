"""Eq. 3 and Eq. 4 (docs/method.md): the DAI loss of every tapped layer at once, and the total loss.

Launch-lean: the terms of all layers come from one autograd Function (:class:`_DAITerms`).
Per layer it adds a flatten view (forward), an ``as_strided`` view of the shared gradient
(backward) and autograd's sum of the activation's two gradients; the rest is a fixed set of
~40 operators whatever the number of layers. Counted with a ``TorchDispatchMode``
(tests/test_invariance_dailoss.py; All-CNN-C width 0.25, B = 128 = 16 × 8, 9 taps, eager,
torch 2.13): baseline step 147 aten calls, DAI step 216 (1.47×), control arm (α = 0, terms
logged without gradient) 188 — against 785 and 472 with one ``dai_loss`` call per layer.

Sync-free: with a :class:`GroupIndex` (``GroupIndex.blocks(K, M)`` builds one without a
sync) a step reads nothing back from the device and builds no tensor from Python data. The
layout's constants (layer sizes, segment lengths, pair counts) are built on the first call and
cached;
``denominator="same_class"`` counts the classes with ``index_add_`` over ``logits.shape[1]``
classes instead of ``unique``/``bincount``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from dainv.invariance.groups import GroupIndex, _ClassGroups
from dainv.invariance.score import _ULPS, _flat

__all__ = ["DAI_EPS", "DAILoss", "dai_loss", "dai_loss_pairwise", "layer_weights"]

#: Added to the DAI loss denominator: when every sample of a batch has the same activation
#: (all-pair distance 0) the loss is 0 (and its gradient 0) instead of 0/0.
DAI_EPS = 1e-12


# Per-layout constants (layer sizes, segment lengths, pair counts): built once, reused.
_CONSTS: dict[tuple, dict[str, torch.Tensor]] = {}


def _consts(sizes: tuple[int, ...], b: int, m: int, num_pairs: float, den_pairs: float | None, acc, device):
    key = (sizes, b, m, num_pairs, den_pairs, acc, str(device))
    c = _CONSTS.get(key)
    if c is None:
        if len(_CONSTS) > 64:
            _CONSTS.clear()
        f64 = dict(dtype=torch.float64, device=device)
        d = torch.tensor(sizes, **f64)
        inv_num = 1.0 / (max(num_pairs, 1.0) * d)
        inv_den = 1.0 / (max(den_pairs or 1.0, 1.0) * d)
        # rows of (A @ [Σ‖x‖²; Σ_g‖s_g‖²; ‖s_den‖²]) ⊙ scale = [w, t, floor]
        seg = torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device))
        c = {
            "seg": seg,  # layer of each column
            # (S, L) 0/1: column u belongs to layer l. (3, S) @ it sums each layer's segment in
            # one GEMM; segment_reduce does the same, but its CUDA kernel sums each segment in
            # one thread (5.8 ms of a 9.5 ms step on an H200).
            "onehot": F.one_hot(seg, len(sizes)).to(torch.float64),
            "d": d,
            "A": torch.tensor([[float(m), -1.0, 0.0], [float(b), 0.0, -1.0], [1.0, 0.0, 0.0]], **f64),
            # floor: a few float ulps of the mean squared activation Σ‖x‖² / (B·D)
            "scale": torch.stack([inv_num, inv_den, _ULPS * torch.finfo(acc).eps / (b * d)]),
            "inv_signed": torch.stack([inv_num, -inv_den]),
            "neg_mb": torch.tensor([[-float(m), -float(b)]], **f64),
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


def _columns_blocks(x: torch.Tensor, num, acc):
    """Training layout (K seeds × M contiguous views, all pairs): the (K, M, S) view, the seed
    sums s_g (K, 1, S), the batch sum Σx (S,), and per column u: ‖x_{·u}‖, ‖s_{·u}‖, Σ_i x_iu."""
    xv = x.view(num.n, num.block, x.shape[1])
    s = xv.sum(1, keepdim=True, dtype=acc)  # (K, 1, S) seed sums
    s_den = s.sum((0, 1))  # (S,) batch sum
    cols = torch.stack(
        [
            torch.linalg.vector_norm(xv, 2, dim=(0, 1), dtype=acc),
            torch.linalg.vector_norm(s, 2, dim=(0, 1)),
            s_den,
        ]
    ).to(torch.float64)
    return xv, s, s_den, cols


def _columns_general(x: torch.Tensor, num, den, acc):
    """Any groups: x, the group sums s_g (G, S), the denominator's sums (the batch sum, or the
    class sums), and per column u: ‖x_{·u}‖, ‖s_{·u}‖ and the norm of the denominator's sums."""
    xa = x.to(acc)
    s = num.sums(xa)  # (G, S)
    s_den = xa.sum(0) if den is None else den.sums(xa)
    cols = torch.stack(
        [
            torch.linalg.vector_norm(xa, 2, dim=0),
            torch.linalg.vector_norm(s, 2, dim=0),
            torch.linalg.vector_norm(s_den.view(-1, x.shape[1]), 2, dim=0),
        ]
    ).to(torch.float64)
    return x, s, s_den, cols


def _pair_means_general(stats, flats, num, den, b: int, den_pairs, c, acc):
    """Any groups: [w, t, floor] per layer from the segment totals ``stats`` = [Σ‖x‖²;
    Σ_g‖s_g‖²; Σ_c‖s_c‖²] and the per-sample ‖x_i‖² weighted by each sample's group sizes;
    and the per-layer scales (1/(P_w·D), 1/(P_t·D), floor)."""
    qs = torch.stack([torch.linalg.vector_norm(f, dim=1, dtype=acc) for f in flats], 1)
    qs = (qs * qs).to(torch.float64)  # (B, L) per-sample ‖x_i‖²
    wn = num.weights(torch.float64)
    wd = torch.full_like(wn, b) if den is None else den.weights(torch.float64)
    pairs = torch.stack([wn @ qs, wd @ qs, stats[0]]) - torch.cat([stats[1:], torch.zeros_like(stats[:1])])
    scale = c["scale"]
    if den_pairs is None:  # same-class pair count is a tensor: no sync
        inv_den = 1.0 / (den.n_pairs.clamp(min=1).double() * c["d"])
        scale = torch.stack([scale[0], inv_den, scale[2]])
    return pairs * scale, scale


def _snapped_ratio(r: torch.Tensor):
    """L = w / (t + ε) from r = [w, t, floor] (L,) each, with w and t at or below the floor set
    to 0; returns (L, ok = t > 0, t + ε)."""
    # n·Σ‖x‖² − ‖Σx‖² cancels: values within a few ulps of the mean second moment are
    # rounding noise, not spread. Snap them to 0 so identical views give exactly 0.
    wt = r[:2]
    wt = torch.where(wt > r[2], wt, 0.0)
    w, t = wt.unbind(0)
    tt = t + DAI_EPS
    ok = t > 0  # every sample identical (or no pair): loss 0 and gradient 0, no branch
    return w / tt * ok, ok, tt


def _grad_factors(loss, ok, tt, fast: bool, scale, c, acc) -> torch.Tensor:
    """Negated gradient factors per layer: −a_w = u·inv_num, −a_t = −L·u·inv_den with
    u = −2·ok/tt; and (fast path) the coefficient of x_i, a_w·n_g + a_t·n_c."""
    u = ok / tt * -2.0
    if fast:
        k = torch.stack([u, loss * u]) * c["inv_signed"]
        return torch.cat([k, c["neg_mb"] @ k]).to(acc)
    return (torch.stack([u * scale[0], -loss * u * scale[1]])).to(acc)


class _DAITerms(torch.autograd.Function):
    """Eq. 3 for all tapped layers at once, with a hand-written backward.

    The activations are concatenated into one (B, S = ΣD_l) matrix. The group sums of every
    layer are one reduction; the per-layer statistics Σ‖x_i‖², Σ_g‖s_g‖² and ‖Σ_i x_i‖² are
    per-column norms summed over each layer's segment (one float64 GEMM with a 0/1 matrix);
    the scalar arithmetic of all layers is vectorised; the backward is one fused multiply-add
    over the (B, S) matrix whose per-layer slices are returned as views (``as_strided``).
    Column sums run in float32 (float64 for float64 input), per-layer totals in float64.
    """

    @staticmethod
    def forward(ctx, num, den, *acts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b = acts[0].shape[0]
        flats, strides = zip(*(_flat_view(a) for a in acts))
        sizes = tuple(f.shape[1] for f in flats)
        x = flats[0] if len(flats) == 1 else torch.cat(flats, 1)  # (B, S)
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        fast = bool(num.block) and den is None
        den_pairs = b * (b - 1) / 2 if den is None else (den.n_pairs if isinstance(den.n_pairs, float) else None)
        c = _consts(sizes, b, num.block, num.n_pairs, den_pairs, acc, x.device)
        xv, s, s_den, cols = _columns_blocks(x, num, acc) if fast else _columns_general(x, num, den, acc)
        stats = (cols * cols) @ c["onehot"]  # Σ_u over each layer's segment: (3, L)
        if fast:
            # M·Σ‖x‖² − Σ_g‖s_g‖², B·Σ‖x‖² − ‖Σx‖², Σ‖x‖², scaled to w, t and the floor.
            scale = c["scale"]
            r = (c["A"] @ stats) * scale
        else:
            r, scale = _pair_means_general(stats, flats, num, den, b, den_pairs, c, acc)
        loss, ok, tt = _snapped_ratio(r)
        if any(ctx.needs_input_grad[2:]):
            k = _grad_factors(loss, ok, tt, fast, scale, c, acc)
            ctx.save_for_backward(xv, s, s_den, k, c["seg"])
            ctx.layout = (num, den, fast, b, sizes, strides, [a.shape for a in acts])
        return loss.to(acc)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        xv, s, s_den, k, seg = ctx.saved_tensors
        num, den, fast, b, sizes, strides, shapes = ctx.layout
        total = xv.shape[-1]
        if fast:
            n_w, n_t, coef = (k * grad).index_select(1, seg).unbind(0)
            bias = torch.addcmul(s_den * n_t, s, n_w)  # (K, 1, S) = −(a_w s_g + a_t s_all)
            if xv.dtype != bias.dtype:
                coef, bias = coef.to(xv.dtype), bias.to(xv.dtype)
            gx = torch.addcmul(bias, xv, coef)  # (K, M, S): one pass over the activations
        else:
            acc = s.dtype
            n_w, n_t = (k * grad).index_select(1, seg).unbind(0)
            wn = num.weights(acc)[:, None]
            wd = torch.full_like(wn, b) if den is None else den.weights(acc)[:, None]
            coef = wn * n_w + wd * n_t  # (B, S), negated
            other = s_den * n_t if den is None else den.spread(s_den * n_t)
            gx = (num.spread(s * n_w) + other - coef * xv.to(acc)).to(xv.dtype)
        grads: list[torch.Tensor | None] = []
        off = 0  # gx is a fresh tensor (storage offset 0); no storage_offset() call: compile-friendly
        for i, (d, st, shape) in enumerate(zip(sizes, strides, shapes)):
            need = ctx.needs_input_grad[2 + i]
            grads.append(gx.as_strided(shape, (total, *st), off) if need else None)
            off += d
        return (None, None, *grads)


class _LayerTerms(torch.autograd.Function):
    """Eq. 3 for one layer in the training layout (K seeds × M contiguous views, all pairs in
    the denominator) from the layer's own memory: no concatenation. The CPU path, where memory
    traffic, not kernel launches, sets the cost; the arithmetic is :class:`_DAITerms`' fast
    path (same statistics, floor and fused backward), one layer at a time."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, k: int, m: int) -> torch.Tensor:  # type: ignore[override]
        x, st = _flat_view(a)
        b, d = x.shape
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        f64 = torch.float64
        q = torch.linalg.vector_norm(x, dim=1, dtype=acc).to(f64).pow(2).sum()  # Σ‖x_i‖²
        s = x.view(k, m, d).sum(1, dtype=acc)  # (K, D) seed sums
        s_all = s.sum(0)  # (D,) batch sum
        ss = torch.linalg.vector_norm(s, dtype=f64).pow(2)  # Σ_g‖s_g‖²
        sa = torch.linalg.vector_norm(s_all, dtype=f64).pow(2)  # ‖Σx‖²
        inv_w, inv_t = 1.0 / (k * m * (m - 1) / 2 * d), 1.0 / (b * (b - 1) / 2 * d)
        floor = q * (_ULPS * torch.finfo(acc).eps / (b * d))
        w, t = (m * q - ss) * inv_w, (b * q - sa) * inv_t
        w, t = torch.where(w > floor, w, 0.0), torch.where(t > floor, t, 0.0)
        tt = t + DAI_EPS
        ok = t > 0  # every sample identical: loss 0 and gradient 0, by a factor (no sync)
        loss = w / tt * ok
        if ctx.needs_input_grad[0]:
            u = ok / tt * -2.0
            n_w, n_t = u * inv_w, -loss * u * inv_t  # negated gradient factors −a_w, −a_t
            ctx.save_for_backward(x, s, s_all, torch.stack([n_w, n_t, -(m * n_w + b * n_t)]).to(acc))
            ctx.layout = (k, m, a.shape, (d, *st))
        return loss.to(acc)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, s, s_all, f = ctx.saved_tensors
        k, m, shape, strides = ctx.layout
        n_w, n_t, coef = (f * grad).unbind(0)
        bias = torch.addcmul(s_all * n_t, s, n_w)[:, None, :]  # −(a_w s_g + a_t s_all)
        if x.dtype != bias.dtype:
            coef, bias = coef.to(x.dtype), bias.to(x.dtype)
        gx = torch.addcmul(bias, x.view(k, m, -1), coef)  # one pass over the activations
        return gx.as_strided(shape, strides), None, None


def _dai_terms(acts, num: GroupIndex, den, fused: bool = True) -> torch.Tensor:
    """L_l of every layer: all layers in one concatenated pass (``fused``: few kernel launches,
    the GPU path), or layer by layer from each activation's own memory (the CPU path: less
    memory traffic) — the latter only for the training layout with the all-pairs denominator."""
    n_ids = num.size
    for a in acts:
        if a.shape[0] != n_ids:
            raise ValueError(f"{a.shape[0]} activations but {n_ids} group ids")
    if not fused and den is None and num.block:
        return torch.stack([_LayerTerms.apply(a, num.n, num.block) for a in acts])
    return _DAITerms.apply(num, den, *acts)


def dai_loss(
    acts: torch.Tensor,
    groups: torch.Tensor | GroupIndex,
    labels: torch.Tensor | GroupIndex | None = None,
    denominator: str = "all",
) -> torch.Tensor:
    """Eq. 3 for one layer: mean within-seed pair distance / mean all-pair distance.

    Both means run over distinct unordered pairs i < j, so the value does not depend on B or
    the number of views M. Differentiable through numerator and denominator; O(B·D) time and
    memory through ``Σ_{i<j∈S} ‖a_i − a_j‖² = n·Σ_{i∈S}‖a_i‖² − ‖Σ_{i∈S} a_i‖²``. Sums run in
    float32 (bf16 input is upcast; float64 input stays float64) and are combined in float64.
    A batch of identical activations gives 0 (see :data:`DAI_EPS`). For many layers at once
    and a training step without host syncs, use :class:`DAILoss`.

    Args:
        acts: (B, ...) one layer's activations.
        groups: (B,) a seed id per sample, in any order (views need not be contiguous), or a
            :class:`GroupIndex` built once.
        labels: (B,) class labels (or their :class:`GroupIndex`), for
            ``denominator="same_class"``.
        denominator: ``"all"`` — all pairs of the batch (the paper, default);
            ``"same_class"`` — pairs of the same label (the authors' released code).

    Returns:
        A float32 scalar (float64 for float64 input).

    Raises:
        ValueError: no two views of one seed (M < 2), mismatched sizes, or a bad denominator.

    Example:
        >>> import torch
        >>> from dainv.invariance import dai_loss
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
    if denominator not in ("all", "same_class"):
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
    return _dai_terms([acts], num, den, fused=acts.device.type != "cpu")[0]


class DAILoss(torch.nn.Module):
    """The total loss of Eq. 4: ``(1 − α)·CE + Σ_l α_l·L_l`` over the tapped layers.

    ``α_l`` follows the exponential law of :func:`layer_weights` over however many layers are
    given (the last weighs ``ratio``× the first). The per-layer terms ``L_l`` (Eq. 3) are
    computed for all layers at once, in a few operators and without host syncs when
    ``groups`` is a :class:`GroupIndex` (build it once: ``GroupIndex.blocks(K, M, device)``).
    With ``alpha=0`` the terms are still computed, without gradient, for logging.

    Args:
        layers: the layer names in depth order (the keys of ``acts``), or their number.
        alpha: α, the total weight of the DAI terms.
        ratio: weight of the last layer over the first.
        denominator: ``"all"`` (the paper) or ``"same_class"`` (the authors' released code;
            the class groups are built from the labels over ``logits.shape[1]`` classes
            without host syncs).
        fused: all layers in one concatenated pass (few kernel launches: the GPU path) or
            layer by layer (less memory traffic: the CPU path); ``None`` (default) picks by
            the device of the activations.

    Example:
        >>> import torch
        >>> from dainv.invariance import DAILoss, GroupIndex
        >>> crit = DAILoss(["a", "b"], alpha=0.1)
        >>> groups = GroupIndex.blocks(4, 2)                  # 4 seeds × 2 views
        >>> logits, labels = torch.randn(8, 3), torch.arange(4).repeat_interleave(2) % 3
        >>> acts = {"a": torch.randn(8, 5, 4, 4), "b": torch.randn(8, 7)}
        >>> loss, parts = crit(logits, labels, acts, groups)
        >>> parts["dai"].shape
        torch.Size([2])
    """

    def __init__(
        self,
        layers: Sequence[str] | int,
        alpha: float = 0.1,
        ratio: float = 10.0,
        denominator: str = "all",
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        if denominator not in ("all", "same_class"):
            raise ValueError(f"denominator must be 'all' or 'same_class', got {denominator!r}")
        self.fused = fused
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.layers: tuple[str, ...] | None = None if isinstance(layers, int) else tuple(layers)
        n = layers if isinstance(layers, int) else len(self.layers)
        self.alpha = float(alpha)
        self.ratio = float(ratio)
        self.denominator = denominator
        self.alphas = layer_weights(n, alpha, ratio)
        # A buffer moves with .to(device): a compiled or CUDA-graph step must not build it.
        self.register_buffer("alpha_weights", torch.tensor(self.alphas), persistent=False)
        self._weights: dict[str, torch.Tensor] = {}
        self._groups: tuple[torch.Tensor, int, GroupIndex] | None = None

    def extra_repr(self) -> str:
        return f"layers={self.layers}, alpha={self.alpha}, ratio={self.ratio}, denominator={self.denominator!r}"

    def _weight(self, device: torch.device) -> torch.Tensor:
        if self.alpha_weights.device == device:
            return self.alpha_weights
        w = self._weights.get(str(device))
        if w is None:  # a loss left on another device: copied once per device, not per step
            w = self._weights[str(device)] = torch.tensor(self.alphas, device=device)
        return w

    def _group_index(self, groups: torch.Tensor | GroupIndex) -> GroupIndex:
        if isinstance(groups, GroupIndex):
            return groups
        cached = self._groups
        if cached is not None and cached[0] is groups and cached[1] == groups._version:
            return cached[2]
        g = GroupIndex(groups)  # unique/bincount: waits for the device; pass a GroupIndex
        if g.n_pairs == 0:
            raise ValueError("the DAI loss needs at least two views of some seed in the batch (M >= 2)")
        self._groups = (groups, groups._version, g)
        return g

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        acts: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
        groups: torch.Tensor | GroupIndex,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 4 for one batch.

        Args:
            logits: (B, C) logits of all views.
            labels: (B,) class labels.
            acts: ``{name: (B, ...)}`` (the second output of ``net(x, taps=layers)``) or the
                activations in layer order.
            groups: the seed of each sample: a :class:`GroupIndex` (no host sync) or a (B,)
                LongTensor of seed ids (indexed once and cached while the same tensor is
                passed again).

        Returns:
            ``(loss, parts)``: the scalar total loss (differentiable), and ``parts = {"ce":
            detached CE, "dai": detached (L,) tensor of L_l in layer order}``.
        """
        if isinstance(acts, Mapping):
            names = self.layers if self.layers is not None else tuple(acts)
            missing = [n for n in names if n not in acts]
            if missing:
                raise ValueError(f"DAILoss: no activations for layer(s) {missing}; got {list(acts)}")
            xs = [acts[n] for n in names]
        else:
            xs = list(acts)
        if len(xs) != len(self.alphas):
            raise ValueError(f"DAILoss was built for {len(self.alphas)} layers, got {len(xs)} activations")
        num = self._group_index(groups)
        den = _ClassGroups(labels, logits.shape[1]) if self.denominator == "same_class" else None
        ce = F.cross_entropy(logits.float(), labels)
        with torch.set_grad_enabled(self.alpha > 0 and torch.is_grad_enabled()):
            fused = self.fused if self.fused is not None else xs[0].device.type != "cpu"
            terms = _dai_terms(xs, num, den, fused)
        if self.alpha > 0:
            loss = torch.add(torch.dot(self._weight(terms.device).to(terms.dtype), terms), ce, alpha=1.0 - self.alpha)
        else:
            loss = ce
        return loss, {"ce": ce.detach(), "dai": terms.detach()}


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
    """Eq. 4: α_l = α·r^((l−1)/(L−1)) / Σ_m r^((m−1)/(L−1)); the last layer weighs ``ratio``× the first.

    Args:
        n_layers: L, the number of tapped layers.
        alpha: α = Σ_l α_l.
        ratio: r, the weight of the last layer over the first.

    Returns:
        The L weights, in layer order.
    """
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if n_layers == 1:
        return [float(alpha)]
    raw = [ratio ** (i / (n_layers - 1)) for i in range(n_layers)]
    total = sum(raw)
    return [alpha * r / total for r in raw]
