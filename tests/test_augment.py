"""Augmentation: exact geometry on known images, ranges, determinism, schemes (SPEC §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage  # the independent reference of SPEC §4 (a dev dependency)

from dainv.augment import (
    SCHEMES,
    TRANSFORMS,
    AugParams,
    apply,
    get_scheme,
    identity_params,
    sample_params,
)


def images(n=4, c=3, h=32, w=32, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def one(**kw) -> AugParams:
    p = identity_params(1)
    for k, v in kw.items():
        setattr(p, k, torch.as_tensor([v], dtype=getattr(p, k).dtype))
    return p


@pytest.mark.parametrize("interp", ["nearest", "bilinear"])
def test_identity_params_are_exact(interp):
    x = images()
    assert torch.equal(apply(x, identity_params(4), interp), x)


@pytest.mark.parametrize("k", [1, 3])
def test_translation_shifts_content_by_k_pixels(k):
    x = images(1)
    y = apply(x, one(translate=[k / 32, 0.0]), "nearest")  # rows: content moves down by k
    assert torch.equal(y[..., k:, :], x[..., :-k, :])
    assert torch.equal(y[..., :k, :], x[..., :1, :].expand_as(y[..., :k, :]))  # edge replication
    y = apply(x, one(translate=[0.0, -k / 32]), "nearest")  # columns: content moves left by k
    assert torch.equal(y[..., :, : 32 - k], x[..., :, k:])


def test_rotation_90_is_rot90_and_flip_twice_is_identity():
    x = images(2)
    p = identity_params(2)
    p.rotation = torch.tensor([90.0, -90.0])
    y = apply(x, p, "nearest")
    assert torch.equal(y[0], torch.rot90(x[0], 1, (-2, -1)))  # counter-clockwise
    assert torch.equal(y[1], torch.rot90(x[1], -1, (-2, -1)))
    p = identity_params(2)
    p.flip = torch.tensor([True, False])
    y = apply(x, p)
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])
    assert torch.equal(apply(y, p), x)


def test_zoom_reads_input_at_scaled_coordinates():
    # zoom = 2 on both axes: output pixel at centred offset p reads input at 2p (zoom out).
    x = torch.arange(16.0).reshape(1, 1, 4, 4) / 16
    y = apply(x, one(zoom=[0.5, 0.5]), "nearest")  # zoom in 2x: centre 2x2 fills the image
    centre = x[..., 1:3, 1:3]
    assert torch.equal(y, centre.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_shear_moves_columns_in_proportion_to_their_offset():
    # SPEC §4, (row, col) about the centre: output (r, c) reads input at (r − sin(s)·c, cos(s)·c).
    x = images(1, 1, 9, 9)
    s = 0.3
    y = apply(x, one(shear=s), "nearest")
    ctr = 4.0
    for r in range(9):
        for c in range(9):
            ri = (r - ctr) - math.sin(s) * (c - ctr) + ctr
            ci = math.cos(s) * (c - ctr) + ctr
            ri, ci = min(max(round(ri), 0), 8), min(max(round(ci), 0), 8)
            assert y[0, 0, r, c] == x[0, 0, ri, ci]


def test_shear_slants_horizontal_lines_and_keeps_vertical_lines_vertical():
    h = w = 33
    horiz = torch.zeros(1, 1, h, w)
    horiz[..., 16, :] = 1.0
    vert = torch.zeros(1, 1, h, w)
    vert[..., :, 16] = 1.0
    p = one(shear=0.3)
    yh, yv = apply(horiz, p, "nearest")[0, 0], apply(vert, p, "nearest")[0, 0]
    rows_of_line = yh.argmax(0)  # the row the line crosses, per column
    assert rows_of_line[4] != rows_of_line[28]  # slanted
    assert (yv[:, 16] == 1).all() and yv.sum() == h  # still the same vertical line


def _scipy_reference(img: np.ndarray, p: AugParams) -> np.ndarray:
    """SPEC §4's geometry re-expressed with scipy: an output→input map in centred (row, col)
    coordinates, ``M = R · T · Sh · Z``, spline order 1 with edge replication (the authors'
    semantics; rotation/translation signs follow dainv's, which SPEC allows to be mirrored)."""
    _, h, w = img.shape
    th = math.radians(float(p.rotation[0]))
    s = float(p.shear[0])
    R = np.array([[math.cos(th), math.sin(th), 0], [-math.sin(th), math.cos(th), 0], [0, 0, 1]])
    T = np.array([[1, 0, -float(p.translate[0, 0]) * h], [0, 1, -float(p.translate[0, 1]) * w], [0, 0, 1]])
    Sh = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    Z = np.diag([float(p.zoom[0, 0]), float(p.zoom[0, 1]), 1.0])
    M = R @ T @ Sh @ Z
    ctr = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = M[:2, 2] + ctr - M[:2, :2] @ ctr
    out = np.stack(
        [ndimage.affine_transform(ch, M[:2, :2], offset, order=1, mode="nearest") for ch in img]
    )
    if bool(p.flip[0]):
        out = out[:, :, ::-1]
    out = np.clip(out + float(p.brightness[0]), 0, 1)
    m = out.mean(axis=(1, 2), keepdims=True)
    g = float(p.contrast[0])
    return np.clip(g * (out - m) + m, 0, 1)


@pytest.mark.parametrize(
    "kw",
    [
        {"rotation": 17.0},
        {"rotation": -22.5},
        {"translate": [0.07, -0.1]},
        {"zoom": [0.87, 1.13]},
        {"zoom": [1.15, 0.9]},
        {"shear": 0.12},
        {"shear": -0.15},
        {"flip": True},
        {"brightness": 0.2},
        {"contrast": 1.4},
        {"rotation": 11.25, "translate": [0.05, 0.05], "zoom": [0.925, 1.075], "shear": 0.075},
    ],
    ids=lambda kw: "+".join(kw),
)
def test_apply_matches_independent_scipy_reference(kw):
    x = images(1, 3, 32, 32, seed=3)
    p = one(**kw)
    ours = apply(x, p).double().numpy()[0]  # default interpolation: bilinear
    ref = _scipy_reference(x.double().numpy()[0], p)
    interior = (slice(None), slice(4, -4), slice(4, -4))
    assert np.abs(ours[interior] - ref[interior]).max() < 1e-3


def test_brightness_and_contrast_formulas():
    x = torch.tensor([[0.1, 0.5], [0.7, 0.9]]).expand(1, 2, 2, 2).clone()
    x[0, 1] = x[0, 1] * 0.5  # second channel has another mean: contrast uses per-channel means
    y = apply(x, one(brightness=0.2))
    torch.testing.assert_close(y, (x + 0.2).clamp(0, 1))
    assert y.max() == 1.0  # 0.9 + 0.2 clipped
    g = 1.5
    y = apply(x, one(contrast=g))
    m = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(y, (g * (x - m) + m).clamp(0, 1))
    # Brightness comes before contrast.
    y = apply(x, one(brightness=-0.2, contrast=0.5))
    xb = (x - 0.2).clamp(0, 1)
    mb = xb.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(y, (0.5 * (xb - mb) + mb).clamp(0, 1))


@pytest.mark.parametrize("sampling", ["truncnorm", "uniform"])
def test_sampled_parameters_stay_inside_ranges(sampling):
    s = get_scheme("heavier", sampling)
    p = sample_params(s, 20000, torch.Generator().manual_seed(0))
    assert p.rotation.abs().max() <= 22.5 and p.rotation.abs().max() > 20
    assert p.translate.abs().max() <= 0.1
    assert p.zoom.min() >= 0.85 and p.zoom.max() <= 1.15
    assert p.shear.abs().max() <= 0.15
    assert p.brightness.abs().max() <= 0.25
    assert p.contrast.min() >= 0.5 and p.contrast.max() <= 1.5
    assert 0.47 < p.flip.float().mean() < 0.53
    # Rows and columns are independent draws.
    assert not torch.equal(p.translate[:, 0], p.translate[:, 1])
    std = p.rotation.std().item()
    if sampling == "truncnorm":  # σ = 45/4 = 11.25 truncated at ±2σ → std ≈ 0.880σ
        assert std == pytest.approx(0.8796 * 11.25, rel=0.03)
    else:  # uniform on ±22.5 → std = 45/√12
        assert std == pytest.approx(45 / 12**0.5, rel=0.03)


def test_heavier_eval_takes_only_extremes():
    p = sample_params(SCHEMES["heavier_eval"], 5000, torch.Generator().manual_seed(1))
    for name, vals in [
        ("rotation", {-11.25, 11.25}),
        ("translate", {-0.05, 0.05}),
        ("zoom", {0.925, 1.075}),
        ("shear", {-0.075, 0.075}),
        ("brightness", {-0.125, 0.125}),
        ("contrast", {0.75, 1.25}),
    ]:
        got = set(torch.unique(getattr(p, name)).tolist())
        assert len(got) == 2, name
        assert sorted(got) == pytest.approx(sorted(vals)), name
    assert 0.45 < p.flip.float().mean() < 0.55
    authors = sample_params(SCHEMES["heavier_eval_authors"], 100, torch.Generator().manual_seed(1))
    assert sorted(set(authors.contrast.tolist())) == pytest.approx([0.25, 1.25])


def test_light_scheme_and_only():
    p = sample_params(SCHEMES["light"], 1000, torch.Generator().manual_seed(0))
    assert torch.all(p.rotation == 0) and torch.all(p.zoom == 1) and torch.all(p.contrast == 1)
    assert p.translate.abs().max() > 0.05
    rot = SCHEMES["heavier"].only("rotation")
    q = sample_params(rot, 1000, torch.Generator().manual_seed(0))
    full = sample_params(SCHEMES["heavier"], 1000, torch.Generator().manual_seed(0))
    assert torch.equal(q.rotation, full.rotation)  # same stream for the kept transformation
    assert torch.all(q.translate == 0) and not q.flip.any() and torch.all(q.brightness == 0)
    assert set(TRANSFORMS) >= {"rotation", "flip", "contrast"}
    with pytest.raises(ValueError, match="unknown transformation"):
        SCHEMES["heavier"].only("blur")
    with pytest.raises(ValueError, match="unknown augmentation scheme"):
        get_scheme("heavy")


def test_same_generator_seed_same_output_and_params_replay():
    x = images(8)
    p1, p2, p3 = (sample_params(SCHEMES["heavier"], 8, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    y1, y2, y3 = (apply(x, p) for p in (p1, p2, p3))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    # Params are plain data: serialise, index and re-apply.
    replay = AugParams.from_dict(p1.as_dict())
    assert torch.equal(apply(x, replay), y1)
    assert torch.equal(apply(x[2:5], p1[2:5]), y1[2:5])
    assert torch.equal(apply(x, AugParams.cat([p1[:3], p1[3:]])), y1)
    assert y1.min() >= 0 and y1.max() <= 1


def test_bilinear_differs_from_nearest_and_errors():
    x = images(4)
    p = sample_params(SCHEMES["heavier"], 4, torch.Generator().manual_seed(0))
    assert not torch.equal(apply(x, p, "bilinear"), apply(x, p, "nearest"))
    with pytest.raises(ValueError, match="interpolation"):
        apply(x, p, "cubic")
    with pytest.raises(ValueError, match="parameter sets"):
        apply(x[:2], p)


def test_the_sampling_grid_and_evaluation_never_use_tf32(monkeypatch):
    """Whatever train.tf32 allows the training step, the augmentation's grid and the
    evaluation's forward run with TF32 off, and the step's setting is restored afterwards."""
    import torch.nn.functional as F

    from dainv import measure, runtime

    seen = []
    real = F.affine_grid
    monkeypatch.setattr(F, "affine_grid", lambda *a, **k: seen.append(
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)) or real(*a, **k))  # fmt: skip
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        x = torch.rand(2, 3, 8, 8)
        apply(x, sample_params(get_scheme("heavier"), 2, torch.Generator().manual_seed(0)))
        run = measure._Runner(lambda x: seen.append(("net", torch.backends.cudnn.allow_tf32)) or x,
                              torch.device("cpu"), "fp32", [])  # fmt: skip
        run(x, taps=False)
        assert seen == [(False, False), ("net", False)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert runtime.configure_backends(torch.device("cpu"), True)["augmentation_tf32"] is False
