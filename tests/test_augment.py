"""Augmentation: exact geometry on known images, ranges, determinism, schemes (SPEC §4)."""

from __future__ import annotations

import pytest
import torch

from dainv.augment import (
    SCHEMES,
    TRANSFORMS,
    AugParams,
    apply,
    augment,
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
    y = apply(x, one(translate=[k / 32, 0.0]))  # rows: content moves down by k
    assert torch.equal(y[..., k:, :], x[..., :-k, :])
    assert torch.equal(y[..., :k, :], x[..., :1, :].expand_as(y[..., :k, :]))  # edge replication
    y = apply(x, one(translate=[0.0, -k / 32]))  # columns: content moves left by k
    assert torch.equal(y[..., :, : 32 - k], x[..., :, k:])


def test_rotation_90_is_rot90_and_flip_twice_is_identity():
    x = images(2)
    p = identity_params(2)
    p.rotation = torch.tensor([90.0, -90.0])
    y = apply(x, p)
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
    y = apply(x, one(zoom=[0.5, 0.5]))  # zoom in 2x: centre 2x2 fills the image
    centre = x[..., 1:3, 1:3]
    assert torch.equal(y, centre.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_shear_moves_rows_in_proportion_to_their_height():
    # Small image, shear s: output (x, y) reads input at (x − sin(s)·y, cos(s)·y).
    x = images(1, 1, 9, 9)
    s = 0.3
    y = apply(x, one(shear=s), "nearest")
    cy = cx = 4.0
    for r in range(9):
        for c in range(9):
            xi = (c - cx) - torch.sin(torch.tensor(s)) * (r - cy) + cx
            yi = torch.cos(torch.tensor(s)) * (r - cy) + cy
            xi, yi = int(torch.round(xi).clamp(0, 8)), int(torch.round(yi).clamp(0, 8))
            assert y[0, 0, r, c] == x[0, 0, yi, xi]


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
    y1, p1 = augment(x, SCHEMES["heavier"], torch.Generator().manual_seed(7))
    y2, p2 = augment(x, SCHEMES["heavier"], torch.Generator().manual_seed(7))
    y3, _ = augment(x, SCHEMES["heavier"], torch.Generator().manual_seed(8))
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
