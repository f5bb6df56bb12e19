"""The measurement of docs/method.md §6 for any tapped network: accuracy and Eq. 2 per layer. :class:`Protocol`
is what is measured; :func:`measure` runs it in two passes; :func:`invariance_profile` is it from Python."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dainv.augment import SCHEMES, TRANSFORMS, Scheme, apply, get_scheme, sample_params
from dainv.config import RunConfig
from dainv.data import images_to_float
from dainv.errors import ConfigError, RunError
from dainv.invariance import InvarianceMeter
from dainv.runtime import autocast, full_fp32, resolve_device

__all__ = ["Protocol", "measure", "measured_layers", "invariance_profile", "per_transform_schemes", "summarise",
           "format_summary"]  # fmt: skip


@dataclass(frozen=True)
class Protocol:
    """What is measured: the evaluation protocol as one value (docs/method.md §6)."""

    scheme: str = "heavier_eval"  # Eq. 2's transformation scheme G
    transforms: int = 5  # T per test image
    layers: tuple[str, ...] | None = None  # tap names in layer order; None: all the model's
    interpolation: str = "bilinear"
    seed: int = 0  # of the transformations and the light TTA views
    tta_views: int = 10
    batch_size: int = 500  # the transformation pass runs B // (T + 1) originals with their views
    per_transform: bool = False  # also score each transformation type alone
    # (mean, std) per channel (or one for all) for a network trained on normalised input: applied after
    # the transformations (which act on [0, 1] images), before the network; the ``input`` tap stays in [0, 1].
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if self.normalize is not None:
            object.__setattr__(self, "normalize", _checked_normalize(self.normalize))

    @classmethod
    def from_config(cls, cfg: RunConfig, **changes: Any) -> Protocol:
        """The protocol of a run's config; ``changes`` that are not ``None`` replace settings."""
        ec = cfg.eval
        scheme = ec.scheme
        if cfg.method.protocol == "authors_code" and scheme == "heavier_eval":
            scheme = "heavier_eval_authors"  # the authors' contrast range (docs/method.md)
        base = cls(scheme, ec.transforms, None, cfg.augment.interpolation, ec.seed,
                   ec.tta_views, ec.batch_size, ec.per_transform)  # fmt: skip
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("layers") is not None:
            changes["layers"] = tuple(changes["layers"])
        return dataclasses.replace(base, **changes)

    def schemes(self) -> dict[str, Scheme]:
        """``{"all": the scheme}``, plus one per transformation type with ``per_transform``."""
        main = get_scheme(self.scheme)
        out = {"all": main}
        if self.per_transform:
            out.update(per_transform_schemes(main))
        return out

    def record(self) -> dict[str, Any]:
        """The ``protocol`` entry of ``summary.json`` (without the run-specific fields)."""
        return {
            "scheme": self.scheme, "scheme_params": dataclasses.asdict(get_scheme(self.scheme)),
            "transforms_per_image": self.transforms, "tta_views": self.tta_views,
            "interpolation": self.interpolation, "bn": "eval", "seed": self.seed,
        } | ({"normalize": {"mean": list(self.normalize[0]), "std": list(self.normalize[1])}} if self.normalize else {})  # fmt: skip


def _checked_normalize(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as two equally long tuples of finite floats, std > 0; else ConfigError."""
    how = ("give the mean and the std per channel, e.g. --normalize 0.49,0.48,0.45/0.25,0.24,0.26 "
           "(normalize=((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)) in Python; one value each for all "
           "channels), as the network was trained (docs/method.md §6)")  # fmt: skip
    try:
        mean, std = (tuple(float(v) for v in ([p] if isinstance(p, (int, float)) else p)) for p in normalize)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid normalize {normalize!r}: {how}") from None
    if not mean or len(mean) != len(std):
        raise ConfigError(f"invalid normalize: {len(mean)} mean(s) and {len(std)} std(s); {how}")
    if not all(np.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ConfigError(f"invalid normalize {mean}/{std}: finite means and std > 0 only; {how}")
    return mean, std


def per_transform_schemes(base: Scheme) -> dict[str, Scheme]:
    """One scheme per transformation type; the flip is always applied (else half the scores are 1)."""
    return {t: dataclasses.replace(base.only(t), flip=1.0) if t == "flip" else base.only(t) for t in TRANSFORMS}


def summarise(scores: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Median, quartiles, mean and whisker ends (1.5 IQR) per layer over the finite scores; NaN
    (Eq. 2's denominator 0) is counted in ``n_undefined``, a layer with none finite gets ``None``."""
    keys = ("median", "q1", "q3", "mean", "whislo", "whishi")
    out: dict[str, dict[str, Any]] = {k: {} for k in (*keys, "n_undefined")}
    for layer, s in scores.items():
        v = np.asarray(s).reshape(-1).astype(np.float64)
        finite = np.isfinite(v)
        out["n_undefined"][layer] = int(v.size - finite.sum())
        v = v[finite]
        if v.size == 0:
            for k in keys:
                out[k][layer] = None
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        stats = (med, q1, q3, v.mean(), v[v >= q1 - 1.5 * iqr].min(), v[v <= q3 + 1.5 * iqr].max())
        for k, x in zip(keys, stats):
            out[k][layer] = float(x)
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """The lines ``dainv evaluate`` prints: accuracy and the median invariance per layer."""
    inv, acc = summary["invariance"], summary.get("accuracy") or {}
    lines = []
    if acc:
        lines.append("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    med = inv["median"]
    lines.append("median invariance per layer (docs/method.md, Eq. 2):")
    lines.append("  " + " ".join(f"{k:>9}" for k in inv["layers"]))
    lines.append("  " + " ".join(f"{med[k]:9.3f}" if med[k] is not None else f"{'undefined':>9}" for k in inv["layers"]))
    if any(med[k] is None for k in inv["layers"]):
        lines.append(
            "undefined: Eq. 2's denominator is 0 there (a single test image, or identical test "
            "images); evaluate on at least 2 different images"
        )
    return "\n".join(lines)


class _Runner:
    """The network on [0, 1] images, normalised first (``Protocol.normalize``)."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str, taps: list[str],
                 normalize=None, channels: int = 3) -> None:  # fmt: skip
        self.model, self.device, self.precision, self.taps = model, device, precision, taps
        self.norm = None
        if normalize is not None:
            mean, std = normalize
            if len(mean) not in (1, channels):
                raise ConfigError(
                    f"normalize gives {len(mean)} values per statistic for {channels}-channel "
                    "images; give one per channel (or one for all)"
                )
            self.norm = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))

    def __call__(self, x: torch.Tensor, taps: bool = True):
        xin = x if self.norm is None else (x - self.norm[0]) / self.norm[1]
        with full_fp32(), autocast(self.device, self.precision):  # TF32 only in a training step
            if not taps:
                return self.model(xin)
            logits, acts = self.model(xin, taps=self.taps)
        if "input" in acts:
            acts["input"] = x
        return logits, acts


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return images_to_float(x) if x.dtype == torch.uint8 else x.float()


def measured_layers(model: nn.Module, proto: Protocol) -> list[str]:
    """The tap names ``proto`` scores in ``model``; a model without the tap protocol is refused."""
    if not hasattr(model, "tap_names"):
        raise RunError(
            f"{type(model).__name__} does not speak the tap protocol (no tap_names), so its "
            "layers cannot be measured; wrap it with dainv.models.tapped(model, layers) (layers: "
            "submodule names as in named_modules(); \"auto\": its blocks)"
        )
    if proto.layers is None:
        return list(model.tap_names)
    if not hasattr(model, "check_taps"):
        return list(proto.layers)
    try:
        return list(model.check_taps(list(proto.layers)))
    except ValueError as e:
        raise RunError(f"invalid --layers: {e}") from None


@torch.no_grad()
def measure(model, x_test, y_test, proto, device, precision, *, desc="evaluate", quiet=True):
    """Both passes over ``x_test`` → (scores, per-transform scores, accuracy or None without ``y_test``, seconds)."""
    run = _Runner(model, device, precision, measured_layers(model, proto), proto.normalize, x_test.shape[1])
    schemes = proto.schemes()
    meters = {k: InvarianceMeter(run.taps) for k in schemes}
    n, bs, t_count, tta = x_test.shape[0], proto.batch_size, proto.transforms, proto.tta_views
    bs2 = max(1, bs // (t_count + 1))  # originals + T views in one forward
    tta = tta if y_test is not None else 0
    bar = None
    if not quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=-(-n // bs) * (1 + tta) + -(-n // bs2) * len(schemes), unit="batch", desc=desc, dynamic_ncols=True)
    tick = bar.update if bar is not None else lambda _: None
    gen = torch.Generator(device=device).manual_seed(proto.seed * 31 + 1)  # the light TTA views
    single = torch.zeros((), dtype=torch.long, device=device)
    right = torch.zeros((), dtype=torch.long, device=device)
    t0 = time.perf_counter()
    try:
        # Pass 1: Eq. 2's reference sums of the originals; the accuracy on the same logits.
        for i in range(0, n, bs):
            x = _as_float(x_test[i : i + bs])
            logits, acts = run(x)
            for m in meters.values():
                m.update_reference(acts)
            del acts
            if y_test is not None:
                y = y_test[i : i + bs]
                single += (logits.argmax(1) == y).sum()
                probs = torch.zeros(x.shape[0], logits.shape[1], device=x.device)
                for _ in range(tta):
                    xv = apply(x, sample_params(SCHEMES["light"], x.shape[0], gen, x.device), proto.interpolation)
                    probs += torch.softmax(run(xv, taps=False).float(), dim=1)
                    tick(1)
                right += (probs.argmax(1) == y).sum()
            tick(1)
        # Pass 2: per-image numerators of Eq. 2 under each scheme (parameters seeded per scheme).
        gens = {k: torch.Generator(device=device).manual_seed(proto.seed * 1009 + j) for j, k in enumerate(schemes)}
        for i in range(0, n, bs2):
            x = _as_float(x_test[i : i + bs2])
            b = x.shape[0]
            for k, scheme in schemes.items():
                xt = x.repeat_interleave(t_count, 0)
                xt = apply(xt, sample_params(scheme, xt.shape[0], gens[k], device), proto.interpolation)
                _, acts = run(torch.cat([x, xt]))
                orig = {name: a[:b] for name, a in acts.items()}
                trans = {name: a[b:].reshape(b, t_count, *a.shape[1:]) for name, a in acts.items()}
                meters[k].update(orig, trans)
                del acts, orig, trans
                tick(1)
    finally:
        if bar is not None:
            bar.close()
    scores = meters.pop("all").compute()
    per_t = {k: m.compute() for k, m in meters.items()}
    accuracy = {"single_view": single.item() / n, f"light_tta{proto.tta_views}": right.item() / n} if y_test is not None else None
    return scores, per_t, accuracy, time.perf_counter() - t0


def invariance_profile(
    net: nn.Module, images: torch.Tensor, scheme: str = "heavier_eval", transforms: int = 5,
    layers: list[str] | None = None, *, interpolation: str = "bilinear", seed: int = 0, batch_size: int = 500,
    device: str | torch.device | None = None, precision: str = "fp32",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Eq. 2 per layer of a tapped network (``dainv.models.tapped`` wraps a plain module; eval mode) on (N, C, H, W)
    images in [0, 1] or uint8, N >= 2 → ``{layer: (N, T) float32}``, NaN where undefined."""
    p = next(net.parameters(), None) if device is None else None
    dev = resolve_device(str(device)) if device is not None else p.device if p is not None else torch.device("cpu")
    proto = Protocol(scheme, transforms, tuple(layers) if layers else None, interpolation, seed,
                     0, batch_size, False, normalize)  # fmt: skip
    measured_layers(net, proto)  # a plain module is refused with the fix before it is moved
    was_training = net.training
    net.eval()
    try:
        scores, _, _, _ = measure(net.to(dev), images.to(dev), None, proto, dev, precision)
    finally:
        net.train(was_training)
    return scores
