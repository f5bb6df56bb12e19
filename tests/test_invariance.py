"""Eq. 1–4 against brute-force references (pairwise loops / full matrices in float64)."""

from __future__ import annotations

import math

import pytest
import torch

from dainv.invariance import (
    GroupIndex,
    InvarianceMeter,
    dai_loss,
    dai_loss_pairwise,
    distance,
    invariance_scores,
    layer_weights,
)


def brute_dai(acts: torch.Tensor, groups: torch.Tensor, labels=None, denominator="all") -> float:
    x = acts.reshape(acts.shape[0], -1).double()
    same, other = [], []
    b = x.shape[0]
    for i in range(b):
        for j in range(i + 1, b):
            d = float(((x[i] - x[j]) ** 2).mean())
            if groups[i] == groups[j]:
                same.append(d)
            if denominator == "all" or labels[i] == labels[j]:
                other.append(d)
    return (sum(same) / len(same)) / (sum(other) / len(other))


def brute_scores(acts: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    n = acts.shape[0]
    x = acts.reshape(n, -1).double()
    t = trans.reshape(n, trans.shape[1], -1).double()
    out = torch.empty(n, t.shape[1], dtype=torch.float64)
    for i in range(n):
        denom = sum(float(((x[i] - x[j]) ** 2).mean()) for j in range(n)) / n
        for k in range(t.shape[1]):
            out[i, k] = 1 - float(((x[i] - t[i, k]) ** 2).mean()) / denom
    return out


def grouped_batch(k=6, m=4, shape=(3, 5, 5), seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    seeds = torch.randn(k, *shape, generator=g) * 3 + 1
    views = seeds.repeat_interleave(m, 0) + spread * torch.randn(k * m, *shape, generator=g)
    groups = torch.arange(k).repeat_interleave(m)
    return views, groups


def test_distance_matches_definition():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(7, 3, 4, 4, generator=g), torch.randn(7, 3, 4, 4, generator=g)
    ref = torch.tensor([((a[i] - b[i]) ** 2).sum() / 48 for i in range(7)])
    torch.testing.assert_close(distance(a, b), ref)
    assert torch.all(distance(a, a) == 0)
    with pytest.raises(ValueError):
        distance(a, b[:3])


@pytest.mark.parametrize("m", [2, 3, 8])
def test_dai_loss_matches_brute_force(m):
    acts, groups = grouped_batch(k=5, m=m)
    got = dai_loss(acts, groups)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(brute_dai(acts, groups), rel=1e-5)


def test_dai_loss_shuffled_groups_and_unequal_sizes():
    acts, groups = grouped_batch(k=4, m=5, seed=3)
    # Drop some samples so groups have unequal sizes, use non-contiguous ids, and shuffle.
    keep = torch.tensor([0, 1, 2, 5, 6, 10, 11, 12, 13, 14, 15, 16, 19])
    acts, groups = acts[keep], groups[keep] * 7 + 100
    perm = torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))
    acts, groups = acts[perm], groups[perm]
    ref = brute_dai(acts, groups)
    assert dai_loss(acts, groups).item() == pytest.approx(ref, rel=1e-5)
    assert dai_loss(acts, GroupIndex(groups)).item() == dai_loss(acts, groups).item()
    assert dai_loss_pairwise(acts, groups).item() == pytest.approx(ref, rel=1e-4)


def test_dai_loss_unequal_magnitudes_and_large_offset():
    acts, groups = grouped_batch(k=4, m=4, seed=5)
    acts = acts * torch.logspace(-2, 2, acts[0].numel()).reshape(acts[0].shape) + 50.0
    assert dai_loss(acts, groups).item() == pytest.approx(brute_dai(acts, groups), rel=1e-4)


def test_dai_loss_same_class_denominator():
    acts, groups = grouped_batch(k=6, m=3, seed=2)
    labels = torch.tensor([0, 1, 0, 2, 1, 2]).repeat_interleave(3)
    got = dai_loss(acts, groups, labels, denominator="same_class")
    assert got.item() == pytest.approx(brute_dai(acts, groups, labels, "same_class"), rel=1e-5)
    assert got.item() != pytest.approx(dai_loss(acts, groups).item(), rel=1e-3)
    with pytest.raises(ValueError, match="labels"):
        dai_loss(acts, groups, denominator="same_class")


def test_dai_loss_bf16_accumulates_in_fp32():
    acts, groups = grouped_batch(k=8, m=4, shape=(16, 8, 8), seed=4)
    a16 = acts.bfloat16()
    got = dai_loss(a16, groups)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(brute_dai(a16.float(), groups), rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dai_loss(a16, groups).dtype == torch.float32


def test_dai_loss_independent_of_batch_size_and_views():
    # Same distribution, different K and M: the pair means estimate the same quantities.
    vals = []
    for k, m in [(64, 2), (16, 8), (32, 4)]:
        acts, groups = grouped_batch(k=k, m=m, shape=(64,), seed=k, spread=1.0)
        vals.append(dai_loss(acts, groups).item())
    assert max(vals) - min(vals) < 0.25 * min(vals)


def test_dai_loss_hand_cases_and_gradient():
    x = torch.randn(4, 10)
    acts = x.repeat_interleave(3, 0).requires_grad_(True)  # identical views
    groups = torch.arange(4).repeat_interleave(3)
    loss = dai_loss(acts, groups)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    # Identical batch: denominator 0 → defined as 0, no NaN.
    same = torch.ones(6, 5, requires_grad=True)
    out = dai_loss(same, torch.arange(3).repeat_interleave(2))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(same.grad).all()
    # Gradient against autograd through the brute-force formula.
    acts, groups = grouped_batch(k=3, m=3, shape=(6,), seed=9)
    a = acts.double().requires_grad_(True)
    dai_loss(a, groups).backward()
    b = acts.double().requires_grad_(True)
    dai_loss_pairwise(b, groups).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="M >= 2"):
        dai_loss(torch.randn(4, 3), torch.arange(4))


def test_layer_weights_match_spec_tables():
    nine = [0.002704, 0.003606, 0.004808, 0.006412, 0.008550, 0.011402, 0.015205, 0.020276, 0.027038]
    eight = [0.003021, 0.004197, 0.005832, 0.008103, 0.011259, 0.015645, 0.021738, 0.030205]
    assert layer_weights(9) == pytest.approx(nine, abs=6e-7)
    assert layer_weights(8) == pytest.approx(eight, abs=6e-7)
    w = layer_weights(5, alpha=0.3, ratio=4.0)
    assert sum(w) == pytest.approx(0.3) and w[-1] / w[0] == pytest.approx(4.0)
    assert layer_weights(1, alpha=0.2) == [0.2]
    with pytest.raises(ValueError):
        layer_weights(0)


def test_invariance_scores_match_brute_force():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(12, 2, 3, 3, generator=g) + 2
    trans = acts[:, None] + 0.5 * torch.randn(12, 4, 2, 3, 3, generator=g)
    got = invariance_scores(acts, trans)
    assert got.shape == (12, 4)
    torch.testing.assert_close(got.double(), brute_scores(acts, trans), rtol=1e-5, atol=1e-6)
    single = invariance_scores(acts, trans[:, 0])
    assert single.shape == (12,)
    torch.testing.assert_close(single, got[:, 0])


def test_invariance_scores_hand_cases():
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(200, 32, generator=g)
    assert torch.all(invariance_scores(acts, acts) == 1)
    # Transformed = another image's activations → distance ≈ the average distance → score ≈ 0.
    other = acts.roll(1, 0)
    assert abs(invariance_scores(acts, other).mean().item()) < 0.05


def test_meter_streams_exactly_the_in_memory_scores():
    g = torch.Generator().manual_seed(2)
    n, t = 50, 3
    layers = {"a": (4, 3, 3), "b": (7,)}
    acts = {k: torch.randn(n, *s, generator=g) * (i + 1) for i, (k, s) in enumerate(layers.items())}
    trans = {k: acts[k][:, None] + torch.randn(n, t, *s, generator=g) for k, s in layers.items()}
    meter = InvarianceMeter(layers)
    for i in range(0, n, 16):  # uneven last batch
        meter.update_reference({k: v[i : i + 16] for k, v in acts.items()})
    for i in range(0, n, 16):
        meter.update({k: v[i : i + 16] for k, v in acts.items()}, {k: v[i : i + 16] for k, v in trans.items()})
    out = meter.compute()
    assert meter.count == n
    for k in layers:
        assert out[k].shape == (n, t)
        ref = invariance_scores(acts[k], trans[k]).numpy()
        assert abs(out[k] - ref).max() < 1e-5


def test_meter_order_errors():
    meter = InvarianceMeter(["a"])
    with pytest.raises(RuntimeError):
        meter.update({"a": torch.randn(2, 3)}, {"a": torch.randn(2, 1, 3)})
    meter.update_reference({"a": torch.randn(2, 3)})
    meter.update({"a": torch.randn(2, 3)}, {"a": torch.randn(2, 1, 3)})
    with pytest.raises(RuntimeError):
        meter.update_reference({"a": torch.randn(2, 3)})
    assert not math.isnan(float(meter.compute()["a"][0, 0]))


def test_dai_loss_channels_last_matches_contiguous_with_same_gradient():
    acts, groups = grouped_batch(k=4, m=4, shape=(6, 5, 5), seed=11)
    a = acts.clone().requires_grad_(True)
    b = acts.clone().to(memory_format=torch.channels_last).requires_grad_(True)
    la, lb = dai_loss(a, groups), dai_loss(b, groups)
    assert la.item() == pytest.approx(lb.item(), rel=1e-5)  # fp32 summation order
    la.backward()
    lb.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)


def test_meter_zero_denominator_is_undefined_not_huge():
    """Eq. 2 with identical test images: the denominator is 0 up to rounding → NaN (undefined)."""
    x = torch.rand(1, 12).expand(5, 12).contiguous()
    meter = InvarianceMeter(["a"])
    meter.update_reference({"a": x})
    meter.update({"a": x}, {"a": (x + 0.1)[:, None]})
    assert all(math.isnan(v) for v in meter.compute()["a"].ravel())
    y = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    meter = InvarianceMeter(["a"])
    meter.update_reference({"a": y})
    meter.update({"a": y}, {"a": y[:, None]})
    assert (meter.compute()["a"] == 1).all()
