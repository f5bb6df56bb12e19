"""The model registry, the thesis's networks, tapped() on any module, one DAI step on each."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from dainv.invariance import DAILoss, GroupIndex
from dainv.models import (
    MODELS,
    TappedModel,
    build_model,
    model_names,
    register_model,
    resolve_layers,
    tapped,
)

FACTORY_SRC = textwrap.dedent(
    """
    from torch import nn

    def factory(num_classes=10, hidden=8):
        return nn.Sequential(
            nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, num_classes),
        )
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "dainv_user_net.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "dainv_user_net:factory"
    sys.modules.pop("dainv_user_net", None)


def test_full_size_parameter_counts_on_meta():
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in build_model(n, 10).parameters()) for n in ("wrn-28-10", "densenet-bc-100-12")}
    assert abs(counts["wrn-28-10"] - 36_479_194) <= 0.02 * 36_479_194
    assert abs(counts["densenet-bc-100-12"] - 769_162) <= 0.02 * 769_162
    assert counts == {"wrn-28-10": 36_479_194, "densenet-bc-100-12": 769_162}  # exactly the standard


def test_taps_of_the_thesis_networks():
    with torch.device("meta"):
        wrn = build_model("wrn-28-10", 10)
    assert wrn.tap_names == ("input",) + tuple(f"block{i}" for i in range(1, 13))
    dense = build_model("densenet-bc-40-12", 10)
    assert resolve_layers(dense, "auto") == ["conv1", "block1", "block2", "block3"]
    net = build_model("allcnn-imagenet", 200, width=0.125).eval()
    logits, acts = net(torch.rand(2, 3, 64, 64), taps=["conv12", "conv1"])
    assert logits.shape == (2, 200) and list(acts) == ["conv1", "conv12"]
    assert acts["conv1"].shape[-1] == 32 and acts["conv12"].shape[-2:] == (4, 4)
    assert len(net.tap_names) == 13 and isinstance(net, TappedModel)


def test_registry_errors_and_names(user_module):
    with pytest.raises(ValueError, match="available: .*wrn-D-K"):
        build_model("resnet50", 10)
    with pytest.raises(ValueError, match=r"unknown or missing option\(s\) \['widht'\].*options are \['width'\]"):
        build_model("allcnnc", 10, widht=0.5)
    with pytest.raises(ValueError, match="depth"):
        build_model("wrn-27-2", 10)
    with pytest.raises(ValueError, match="cannot import"):
        build_model("no_such_pkg.mod:factory", 10)
    assert build_model(user_module, 10).tap_names == ("input", "0", "2", "6")  # auto: its blocks
    with pytest.raises(ValueError, match="did you mean '2'"):
        build_model(user_module, 10, layers=["1", "22"])
    names = model_names()
    assert "allcnnc" in names and any(n.startswith("densenet-bc-L-k") for n in names)
    assert "module.path:factory" in names
    with pytest.raises(ValueError, match="did you mean 'conv1'"):
        resolve_layers(build_model("allcnnc", 10, width=0.125), ["conv01"])


def test_register_model_decorator():
    @register_model("tiny-test-net")
    def tiny(num_classes: int = 10, in_channels: int = 3):
        return tapped(nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(num_classes)), ["1"])

    try:
        net = build_model("tiny-test-net", 5)
        assert net.tap_names == ("input", "1")
    finally:
        MODELS.pop("tiny-test-net")


def test_allcnnc_weights_unchanged_by_the_registry():
    torch.manual_seed(7)
    a = build_model("allcnnc", 10, 3, width=0.25).state_dict()
    torch.manual_seed(7)
    from dainv.models.allcnnc import AllCNNC

    b = AllCNNC(10, width=0.25).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _one_dai_step(net: nn.Module, layers: list[str], size: int = 32) -> None:
    torch.manual_seed(0)
    k, m = 4, 2
    x = torch.rand(k, 3, size, size).repeat_interleave(m, 0) + 0.05 * torch.rand(k * m, 3, size, size)
    y = torch.arange(k).repeat_interleave(m) % 3
    crit = DAILoss(layers, alpha=0.1)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    logits, acts = net(x, taps=layers)
    loss, parts = crit(logits, y, acts, GroupIndex.blocks(k, m))
    loss.backward()
    first = next(p for p in net.parameters() if p.dim() == 4)  # the first conv's weight
    assert torch.isfinite(loss) and parts["dai"].shape == (len(layers),)
    assert torch.isfinite(parts["dai"]).all() and (parts["dai"] > 0).all()
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    opt.step()


@pytest.mark.parametrize("name", ["wrn-10-1", "densenet-bc-40-12"])
def test_small_thesis_networks_train_one_dai_step(name):
    net = build_model(name, 10)
    _one_dai_step(net, resolve_layers(net, "auto"))


def test_user_factory_trains_one_dai_step(user_module):
    net = build_model(user_module, 10, layers=["1", "3"], hidden=6)
    assert net.tap_names == ("input", "1", "3")
    _one_dai_step(net, resolve_layers(net, "auto"))


def test_tapped_equals_manual_forward_and_keeps_logits():
    torch.manual_seed(0)
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    ).eval()
    net = tapped(seq, ["4", "2"])  # given order is the layer order
    assert net.tap_names == ("input", "4", "2")
    x = torch.rand(3, 3, 12, 12)
    ref, h = {}, x
    for i, mod in enumerate(seq):
        h = mod(h)
        ref[str(i)] = h
    logits, acts = net(x, taps=["2", "4", "input"])
    assert list(acts) == ["input", "4", "2"]
    assert torch.equal(acts["2"], ref["2"]) and torch.equal(acts["4"], ref["4"]) and acts["input"] is x
    assert torch.equal(logits, seq(x)) and torch.equal(net(x), seq(x))
    # channels_last
    net_cl = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    lc, ac = net_cl(xc, taps=["2"])
    torch.testing.assert_close(lc, logits)
    torch.testing.assert_close(ac["2"], ref["2"])


def test_tapped_state_dict_keys_and_errors():
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    net = tapped(seq, ["1"])
    assert list(net.state_dict()) == list(seq.state_dict())  # the inner module's own keys
    other = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    net.load_state_dict(other.state_dict())  # a plain state_dict loads into the wrapper
    assert torch.equal(seq[0].weight, other[0].weight)
    seq.load_state_dict(net.state_dict())  # and back
    with pytest.raises(ValueError, match=r"unknown submodule name\(s\) \['3'\].*\['0', '1', '2'\]"):
        tapped(seq, ["3"])

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = nn.Linear(3, 3)

        def forward(self, x):
            return self.f(self.f(x))

    tw = tapped(Twice(), ["f"])
    tw(torch.rand(2, 3))  # untapped calls are fine
    with pytest.raises(RuntimeError, match="more than once"):
        tw(torch.rand(2, 3), taps=["f"])


def test_tapped_under_torch_compile():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    net = tapped(seq, ["1"])
    x = torch.rand(2, 3, 6, 6)
    ref_logits, ref = net(x, taps=["1"])
    compiled = torch.compile(net, backend="eager")
    logits, acts = compiled(x, taps=["1"])
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(acts["1"], ref["1"])


def test_tapped_under_ddp(tmp_path):
    """A tapped module under DDP (gloo, one process): taps and gradients through the wrapper.
    In a child process that leaves with os._exit once checked: gloo's process-group destructor
    can hang joining its worker thread (seen in a CI run), which must not hang the suite."""
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    code = textwrap.dedent(f"""
        import os, torch, torch.distributed as dist
        from torch import nn
        from dainv.invariance import DAILoss, GroupIndex
        from dainv.models import tapped
        dist.init_process_group("gloo", init_method="file://{tmp_path / 'pg'}", rank=0, world_size=1)
        seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        ddp = nn.parallel.DistributedDataParallel(tapped(seq, ["1"]))
        logits, acts = ddp(torch.rand(6, 4), taps=["1"])
        loss, _ = DAILoss(["1"])(logits, torch.zeros(6, dtype=torch.long), acts, GroupIndex.blocks(3, 2))
        loss.backward()
        assert torch.isfinite(seq[0].weight.grad).all()
        assert list(ddp.module.state_dict()) == list(seq.state_dict())
        print("OK", flush=True)
        os._exit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr[-3000:]


def test_architecture_recipe_add_a_model(monkeypatch):
    """docs/architecture.md's "Add a model", both forms, builds by name; a regex given as a
    plain name is refused with the way to do it."""
    import re as _re
    from pathlib import Path

    import dainv.models as dm

    monkeypatch.setattr(dm, "MODELS", dict(dm.MODELS))
    monkeypatch.setattr(dm, "_PATTERNS", dict(dm._PATTERNS))
    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    block = _re.search(r"\*\*Add a model\.\*\*.*?```python\n(.*?)```", doc, _re.S).group(1)
    body = "    return dm.AllCNNC(num_classes=num_classes, in_channels=in_channels, width=0.125)"
    code = _re.sub(r"-> nn\.Module: \.\.\.", "-> nn.Module:\n" + body, block)
    exec(code, {"register_model": dm.register_model, "nn": torch.nn, "dm": dm})
    assert dm.build_model("my-net", 10).tap_names and dm.build_model("my-net-3", 10).tap_names
    assert any(n == "my-net-N (e.g. my-net-3)" for n in dm.model_names())
    with pytest.raises(ValueError, match="pattern="):
        dm.register_model(r"my-net-(\d+)", dm.AllCNNC)
