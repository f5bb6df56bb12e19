"""All-CNN-C: parameter count, tap shapes (SPEC §3 table), taps leave logits unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dainv.models import AllCNNC, build_model

SPEC_SHAPES = {
    "input": (3, 32, 32),
    "conv1": (96, 32, 32),
    "conv2": (96, 32, 32),
    "conv3": (96, 16, 16),
    "conv4": (192, 16, 16),
    "conv5": (192, 16, 16),
    "conv6": (192, 8, 8),
    "conv7": (192, 8, 8),
    "conv8": (192, 8, 8),
    "conv9": (10, 8, 8),
}


def test_parameter_count_and_init():
    torch.manual_seed(0)
    m = AllCNNC()
    n = sum(p.numel() for p in m.parameters())
    assert 1.36e6 < n < 1.38e6  # 1.37 M (SPEC §3)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) == 9 and all(torch.all(c.bias == 0) for c in convs)
    w = convs[4].weight  # Xavier-uniform bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (192 * 9 + 192 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert len(bns) == 9 and all(b.eps == 1.001e-5 and b.momentum == 0.01 for b in bns)


def test_tap_shapes_and_logits_unchanged():
    torch.manual_seed(0)
    m = AllCNNC().eval()
    x = torch.rand(2, 3, 32, 32)
    logits, acts = m(x, taps=list(reversed(m.tap_names)))
    assert list(acts) == list(m.tap_names)  # layer order, whatever order was asked
    for name, shape in SPEC_SHAPES.items():
        assert acts[name].shape == (2, *shape), name
    assert torch.equal(acts["input"], x)
    assert (acts["conv9"] >= 0).all()  # ReLU after conv9
    assert torch.equal(logits, m(x))
    assert torch.allclose(logits, acts["conv9"].mean(dim=(2, 3)))
    some_logits, some = m(x, taps=["conv3"])
    assert list(some) == ["conv3"] and torch.equal(some_logits, logits)


def test_width_and_errors():
    m = AllCNNC(num_classes=100, width=0.25)
    _, acts = m(torch.rand(1, 3, 32, 32), taps=["conv1", "conv9"])
    assert acts["conv1"].shape[1] == 24 and acts["conv9"].shape[1] == 100
    with pytest.raises(ValueError, match="unknown layer"):
        m(torch.rand(1, 3, 32, 32), taps=["conv10"])
    with pytest.raises(ValueError):
        AllCNNC(width=0)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet", 10)


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = AllCNNC(width=0.5).state_dict()
    torch.manual_seed(3)
    b = AllCNNC(width=0.5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("name", "mode"), [("wrn-10-1", "fan_out"), ("densenet-bc-22-6", "fan_in")])
def test_he_init_of_wrn_and_densenet(name, mode):
    """WRN (fan-out) and DenseNet (fan-in) use He-normal convs (std = √(2 / fan)), BN at
    (1, 0) with fresh statistics and a zero linear bias (models.base.he_init)."""
    torch.manual_seed(3)
    net = build_model(name, 10)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 400:
            k = m.weight.shape[2] * m.weight.shape[3]
            fan = k * (m.out_channels if mode == "fan_out" else m.in_channels)
            other = k * (m.in_channels if mode == "fan_out" else m.out_channels)
            std = float(m.weight.std())
            assert std == pytest.approx((2 / fan) ** 0.5, rel=0.1), (m, std)
            if max(fan, other) >= 1.5 * min(fan, other):  # the other fan: a std ≥ 22 % off, so the mode is pinned
                assert std != pytest.approx((2 / other) ** 0.5, rel=0.1)
        elif isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
            assert bool((m.running_mean == 0).all()) and bool((m.running_var == 1).all())
        elif isinstance(m, nn.Linear):
            assert bool((m.bias == 0).all())
