"""Batched, on-device image augmentation with per-sample parameters (docs/method.md).

As in kornia, *sampling* and *applying* are separate:

* :func:`sample_params` draws an :class:`AugParams` record — plain per-sample tensors — from a
  :class:`Scheme` and a ``torch.Generator``;
* :func:`apply` is a pure function of the images and that record.

The record can be logged, indexed (``params[idx]``), concatenated and re-applied, so an
experiment can say exactly which transformation produced which view.

Conventions (all about the image centre, images are (N, C, H, W) floats in [0, 1]):

* ``translate`` (N, 2): (rows, columns) as a fraction of the image size; positive moves the
  content down / right.
* ``zoom`` (N, 2): (rows, columns) scale of the sampling grid, as in Keras'
  ``ImageDataGenerator``: the output pixel at offset ``p`` from the centre reads the input at
  ``zoom · p``, so ``zoom > 1`` zooms out (content shrinks).
* ``rotation`` (N,): degrees, positive rotates the content counter-clockwise.
* ``shear`` (N,): radians; in centred (row, col) coordinates the output pixel at (r, c) reads
  the input at (r − sin(s)·c, cos(s)·c) before rotation and translation (the authors'
  convention, ``Sh = [[1, −sin s], [0, cos s]]``): horizontal lines slant, vertical lines stay
  vertical.
* ``flip`` (N,): bool, mirror left–right.
* ``brightness`` (N,): δ in ``x ← clip(x + δ, 0, 1)``.
* ``contrast`` (N,): γ in ``x ← clip(γ·(x − m) + m, 0, 1)``, m the per-image, per-channel mean.

Order (docs/method.md): one composed affine warp (rotation · translation · shear · zoom, as an
output→input map), resampled with edge replication; then flip; then brightness; then contrast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "AugParams",
    "Scheme",
    "SCHEMES",
    "TRANSFORMS",
    "get_scheme",
    "sample_params",
    "apply",
    "augment",
    "affine_matrices",
    "identity_params",
]

Interpolation = Literal["nearest", "bilinear"]
Sampling = Literal["truncnorm", "uniform", "extremes"]

#: Transformation types, as named by ``Scheme.only`` and ``dainv evaluate --per-transform``.
TRANSFORMS: tuple[str, ...] = (
    "rotation",
    "translation",
    "zoom",
    "shear",
    "flip",
    "brightness",
    "contrast",
)


@dataclass
class AugParams:
    """Per-sample augmentation parameters: a plain record of tensors with leading dim N."""

    rotation: torch.Tensor  # (N,) degrees
    translate: torch.Tensor  # (N, 2) fraction of (H, W)
    zoom: torch.Tensor  # (N, 2)
    shear: torch.Tensor  # (N,) radians
    flip: torch.Tensor  # (N,) bool
    brightness: torch.Tensor  # (N,)
    contrast: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return self.rotation.shape[0]

    def __getitem__(self, idx) -> AugParams:
        return AugParams(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def to(self, device: torch.device | str) -> AugParams:
        return AugParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @staticmethod
    def cat(parts: list[AugParams]) -> AugParams:
        return AugParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(AugParams)}
        )

    def as_dict(self) -> dict[str, list]:
        """Python lists, for logging (JSON) and for re-building with :meth:`from_dict`."""
        return {f.name: getattr(self, f.name).tolist() for f in fields(self)}

    @staticmethod
    def from_dict(d: dict, device: torch.device | str = "cpu") -> AugParams:
        out = {}
        for f in fields(AugParams):
            dtype = torch.bool if f.name == "flip" else torch.float32
            out[f.name] = torch.as_tensor(d[f.name], dtype=dtype, device=device)
        return AugParams(**out)


def identity_params(n: int, device: torch.device | str = "cpu") -> AugParams:
    """Parameters that leave every image exactly unchanged."""
    z = torch.zeros(n, device=device)
    return AugParams(
        rotation=z.clone(),
        translate=torch.zeros(n, 2, device=device),
        zoom=torch.ones(n, 2, device=device),
        shear=z.clone(),
        flip=torch.zeros(n, dtype=torch.bool, device=device),
        brightness=z.clone(),
        contrast=torch.ones(n, device=device),
    )


@dataclass(frozen=True)
class Scheme:
    """An augmentation scheme: an interval per parameter and how to sample inside it.

    Intervals equal to the identity value (e.g. ``rotation=(0, 0)``) switch a transformation
    off. ``sampling``: ``truncnorm`` — normal centred on the interval, σ = width/4, truncated to
    it (the authors' released configs, the project default); ``uniform`` — the paper's wording;
    ``extremes`` — each parameter independently takes one of the two ends (``heavier_eval``).
    The flip is always a coin with probability ``flip``.
    """

    name: str
    flip: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    zoom: tuple[float, float] = (1.0, 1.0)
    rotation: tuple[float, float] = (0.0, 0.0)
    shear: tuple[float, float] = (0.0, 0.0)
    brightness: tuple[float, float] = (0.0, 0.0)
    contrast: tuple[float, float] = (1.0, 1.0)
    sampling: Sampling = "truncnorm"

    def __post_init__(self) -> None:
        if self.sampling not in ("truncnorm", "uniform", "extremes"):
            raise ValueError(
                f"unknown sampling {self.sampling!r}; use 'truncnorm', 'uniform' or 'extremes'"
            )
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {self.flip}")
        for key in ("translate", "zoom", "rotation", "shear", "brightness", "contrast"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"{key} interval must have low <= high, got ({lo}, {hi})")
        if self.zoom[0] <= 0 or self.contrast[0] < 0:
            raise ValueError("zoom must be > 0 and contrast >= 0")

    def only(self, *transforms: str) -> Scheme:
        """The same scheme with every transformation but ``transforms`` switched off.

        Names are those of :data:`TRANSFORMS` (``translation`` is the ``translate`` parameter).
        """
        unknown = [t for t in transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transformation(s) {unknown}; choose from {list(TRANSFORMS)}")
        off = Scheme(name="identity")
        keep = {"translate" if t == "translation" else t for t in transforms}
        changes = {
            k: getattr(self, k)
            for k in ("flip", "translate", "zoom", "rotation", "shear", "brightness", "contrast")
            if k in keep
        }
        changes = {
            k: (changes[k] if k in changes else getattr(off, k))
            for k in ("flip", "translate", "zoom", "rotation", "shear", "brightness", "contrast")
        }
        return replace(self, name=f"{self.name}[{'+'.join(transforms)}]", **changes)

    def with_sampling(self, sampling: Sampling) -> Scheme:
        return replace(self, sampling=sampling)


def _sym(r: float) -> tuple[float, float]:
    return (-r, r)


#: The schemes of docs/method.md. ``heavier_eval`` uses half the heavier ranges at their extremes.
SCHEMES: dict[str, Scheme] = {
    "none": Scheme(name="none"),
    "light": Scheme(name="light", flip=0.5, translate=_sym(0.1)),
    "heavier": Scheme(
        name="heavier",
        flip=0.5,
        translate=_sym(0.1),
        zoom=(0.85, 1.15),
        rotation=_sym(22.5),
        shear=_sym(0.15),
        brightness=_sym(0.25),
        contrast=(0.5, 1.5),
    ),
    "heavier_eval": Scheme(
        name="heavier_eval",
        flip=0.5,
        translate=_sym(0.05),
        zoom=(0.925, 1.075),
        rotation=_sym(11.25),
        shear=_sym(0.075),
        brightness=_sym(0.125),
        contrast=(0.75, 1.25),
        sampling="extremes",
    ),
}
# The authors' released file gives contrast {0.25, 1.25} for the evaluation scheme.
SCHEMES["heavier_eval_authors"] = replace(
    SCHEMES["heavier_eval"], name="heavier_eval_authors", contrast=(0.25, 1.25)
)


def get_scheme(name: str, sampling: Sampling | None = None) -> Scheme:
    """A scheme of :data:`SCHEMES` by name, optionally with another sampling law."""
    try:
        scheme = SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown augmentation scheme {name!r}; choose from {sorted(SCHEMES)}") from None
    if sampling is not None and scheme.sampling != "extremes":
        scheme = scheme.with_sampling(sampling)
    return scheme


# Φ(2) − Φ(−2): the truncnorm spans ±2σ since σ = width / 4.
_PHI_M2 = 0.5 * math.erfc(2.0 / math.sqrt(2.0))


def _draw(
    interval: tuple[float, float],
    shape: tuple[int, ...],
    sampling: Sampling,
    gen: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    lo, hi = interval
    u = torch.rand(shape, generator=gen, device=device)
    if lo == hi:
        # Keep the generator stream independent of which transformations are on, so that a
        # single-transformation scheme draws the same values for it as the full scheme.
        return torch.full(shape, float(lo), device=device)
    if sampling == "uniform":
        return lo + (hi - lo) * u
    if sampling == "extremes":
        return torch.where(u < 0.5, torch.full_like(u, lo), torch.full_like(u, hi))
    # Inverse-CDF truncated normal on [μ − 2σ, μ + 2σ]; clamp guards ndtri(0/1) = ∓inf.
    mu, sigma = 0.5 * (lo + hi), 0.25 * (hi - lo)
    p = _PHI_M2 + (1.0 - 2.0 * _PHI_M2) * u
    x = mu + sigma * torch.special.ndtri(p.double()).float()
    return x.clamp_(lo, hi)


def sample_params(
    scheme: Scheme,
    n: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> AugParams:
    """Draw ``n`` independent parameter sets from ``scheme``.

    Reproducible for a given generator state; the generator must live on ``device`` (default:
    the generator's device). Every parameter always consumes the same number of random numbers,
    so switching a transformation off does not change the others' draws.
    """
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    s = scheme.sampling
    return AugParams(
        rotation=_draw(scheme.rotation, (n,), s, generator, device),
        translate=_draw(scheme.translate, (n, 2), s, generator, device),
        zoom=_draw(scheme.zoom, (n, 2), s, generator, device),
        shear=_draw(scheme.shear, (n,), s, generator, device),
        flip=torch.rand(n, generator=generator, device=device) < scheme.flip,
        brightness=_draw(scheme.brightness, (n,), s, generator, device),
        contrast=_draw(scheme.contrast, (n,), s, generator, device),
    )


def affine_matrices(params: AugParams, height: int, width: int) -> torch.Tensor:
    """(N, 3, 3) output→input maps in centred pixel coordinates (x right, y down).

    ``A = R · T · Sh · Z``: an output pixel at centred position p reads the input at A·p.
    """
    n = len(params)
    dev = params.rotation.device
    # With y pointing down, [[c, −s], [s, c]] turns p clockwise on screen; reading the input
    # there turns the content counter-clockwise.
    th = torch.deg2rad(params.rotation.float())
    c, s = torch.cos(th), torch.sin(th)
    eye = torch.eye(3, device=dev).expand(n, 3, 3)
    R = eye.clone()
    R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1] = c, -s, s, c
    T = eye.clone()
    # Content moves by +t, so the output reads the input at p − t.
    T[:, 0, 2] = -params.translate[:, 1].float() * width
    T[:, 1, 2] = -params.translate[:, 0].float() * height
    # The authors' (row, col) shear [[1, −sin s], [0, cos s]], written in (x, y) = (col, row):
    # x_in = cos(s)·x, y_in = y − sin(s)·x — it slants horizontal lines only.
    Sh = eye.clone()
    sh = params.shear.float()
    Sh[:, 0, 0] = torch.cos(sh)
    Sh[:, 1, 0] = -torch.sin(sh)
    Z = eye.clone()
    Z[:, 0, 0] = params.zoom[:, 1].float()
    Z[:, 1, 1] = params.zoom[:, 0].float()
    return R @ T @ Sh @ Z


def _is_identity_warp(params: AugParams) -> torch.Tensor:
    return (
        (params.rotation == 0)
        & (params.translate == 0).all(-1)
        & (params.zoom == 1).all(-1)
        & (params.shear == 0)
    )


def apply(
    images: torch.Tensor, params: AugParams, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """Apply per-sample ``params`` to ``images``; pure, batched, on the images' device.

    Identity parameters give back the input bit for bit. No host sync and no tensor built
    from Python data, so it can run inside a training step on a GPU.

    Args:
        images: (N, C, H, W) floats in [0, 1].
        params: N parameter sets (:func:`sample_params`, :func:`identity_params`).
        interpolation: ``"bilinear"`` (default) or ``"nearest"``.

    Returns:
        (N, C, H, W) augmented images in [0, 1].

    Example:
        >>> import torch
        >>> from dainv.augment import apply, get_scheme, identity_params, sample_params
        >>> x = torch.rand(4, 3, 32, 32)
        >>> torch.equal(apply(x, identity_params(4)), x)
        True
        >>> g = torch.Generator().manual_seed(0)
        >>> views = apply(x, sample_params(get_scheme("heavier"), 4, g))
        >>> views.shape, bool(views.min() >= 0) and bool(views.max() <= 1)
        (torch.Size([4, 3, 32, 32]), True)
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"{len(params)} parameter sets for {images.shape[0]} images")
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
    n, _, h, w = images.shape
    x = images
    # (1) Affine warp. affine_grid works in normalised coordinates (align_corners=False:
    # ±1 at the outer pixel edges), so conjugate the pixel-space map by the scale diag(W/2, H/2).
    A = affine_matrices(params, h, w)
    # diag(W/2, H/2, 1) filled on the device: no tensor from Python data, no host→device copy.
    S = torch.cat([A.new_full((1,), w / 2.0), A.new_full((1,), h / 2.0), A.new_ones(1)])
    theta = (A / S[None, :, None] * S[None, None, :])[:, :2, :]  # S⁻¹ · A · S
    grid = F.affine_grid(theta.to(x.dtype), [n, x.shape[1], h, w], align_corners=False)
    warped = F.grid_sample(x, grid, mode=interpolation, padding_mode="border", align_corners=False)
    # Rounding in the grid can move an identity sample by an ulp under bilinear; keep it exact.
    x = torch.where(_is_identity_warp(params).view(n, 1, 1, 1), x, warped)
    # (2) Horizontal flip.
    x = torch.where(params.flip.view(n, 1, 1, 1), x.flip(-1), x)
    # (3) Brightness.
    x = (x + params.brightness.to(x.dtype).view(n, 1, 1, 1)).clamp_(0.0, 1.0)
    # (4) Contrast about the per-image, per-channel mean; γ·x + (1 − γ)·m is exact for γ = 1.
    g = params.contrast.to(x.dtype).view(n, 1, 1, 1)
    m = x.mean(dim=(2, 3), keepdim=True)
    return (g * x + (1.0 - g) * m).clamp_(0.0, 1.0)


def augment(
    images: torch.Tensor,
    scheme: Scheme,
    generator: torch.Generator | None = None,
    interpolation: Interpolation = "bilinear",
) -> tuple[torch.Tensor, AugParams]:
    """Sample parameters for each image and apply them; returns (views, params)."""
    params = sample_params(scheme, images.shape[0], generator, device=images.device)
    return apply(images, params, interpolation), params
