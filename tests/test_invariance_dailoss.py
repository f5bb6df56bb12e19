"""DAILoss (Eq. 4) against the manual formula, the general-group paths against brute force,
and the launch-lean, sync-free training step (operator count with a TorchDispatchMode)."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from bench_ops import OpCounter  # host syncs and host-built tensors: bench_ops.HOST

import dainv.models
from dainv.augment import apply, get_scheme, sample_params
from dainv.invariance import DAILoss, GroupIndex, dai_loss, dai_loss_pairwise, layer_weights
from dainv.models import build_model


def grouped(k=6, m=4, shapes=((3, 5, 5), (7,), (2, 3, 3)), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for shape in shapes:
        seeds = torch.randn(k, *shape, generator=g) * 2 + 1
        out.append(seeds.repeat_interleave(m, 0) + 0.4 * torch.randn(k * m, *shape, generator=g))
    return out, torch.arange(k).repeat_interleave(m)


@pytest.mark.parametrize("alpha", [0.1, 0.3])
def test_dailoss_equals_manual_eq4(alpha):
    acts, groups = grouped()
    names = ["a", "b", "c"]
    logits = torch.randn(len(groups), 5)
    labels = (torch.arange(6) % 5).repeat_interleave(4)  # the views of a seed share its label
    crit = DAILoss(names, alpha=alpha, ratio=10.0)
    loss, parts = crit(logits, labels, dict(zip(names, acts)), GroupIndex.blocks(6, 4))
    terms = torch.stack([dai_loss_pairwise(a, groups) for a in acts])
    ce = F.cross_entropy(logits, labels)
    manual = (1 - alpha) * ce + (torch.tensor(layer_weights(3, alpha, 10.0)) * terms).sum()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    torch.testing.assert_close(parts["dai"], terms.float(), rtol=1e-4, atol=1e-7)
    assert parts["ce"].item() == pytest.approx(ce.item()) and not parts["dai"].requires_grad
    # The same with a tensor of seed ids, and a sequence of activations.
    loss2, _ = crit(logits, labels, acts, groups)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_dailoss_gradients_match_autograd_through_the_pairwise_formula():
    acts, groups = grouped(k=3, m=3, shapes=((2, 2, 2), (5,)), seed=4)
    a = [t.double().requires_grad_(True) for t in acts]
    b = [t.double().requires_grad_(True) for t in acts]
    logits = torch.randn(9, 3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 0]).repeat_interleave(3)
    loss, _ = DAILoss(["x", "y"], alpha=0.2)(logits, labels, a, GroupIndex.blocks(3, 3))
    loss.backward()
    w = layer_weights(2, 0.2)
    ref = sum(wi * dai_loss_pairwise(t, groups) for wi, t in zip(w, b))
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("case", ["shuffled", "same_class", "same_class_shuffled"])
def test_general_groups_value_and_gradient(case):
    acts, groups = grouped(k=4, m=3, shapes=((3, 2, 2), (4,)), seed=7)
    labels = torch.tensor([0, 1, 0, 2]).repeat_interleave(3)
    if "shuffled" in case:
        perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
        acts, groups, labels = [t[perm] for t in acts], groups[perm] * 5 + 3, labels[perm]
    denom = "same_class" if "same_class" in case else "all"
    a = [t.double().requires_grad_(True) for t in acts]
    b = [t.double().requires_grad_(True) for t in acts]
    crit = DAILoss(2, alpha=0.5, denominator=denom)
    loss, parts = crit(torch.zeros(12, 3, dtype=torch.float64), labels, a, groups)
    refs = [dai_loss_pairwise(t, groups, labels, denom) for t in b]
    torch.testing.assert_close(parts["dai"], torch.stack(refs).detach(), rtol=1e-6, atol=1e-10)
    loss.backward()
    (0.5 * sum(w * r for w, r in zip(layer_weights(2, 1.0), refs))).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-10)
    # dai_loss for one layer takes the same path
    got = dai_loss(acts[0], groups, labels, denom)
    assert got.item() == pytest.approx(refs[0].item(), rel=1e-5)


def test_same_class_without_pairs_is_zero_not_nan():
    acts, groups = grouped(k=2, m=2, shapes=((4,),))
    loss, parts = DAILoss(1, denominator="same_class")(torch.zeros(4, 4), torch.arange(4), acts, groups)
    assert parts["dai"].item() == 0.0 and torch.isfinite(loss)


def test_control_arm_logs_terms_without_graph():
    acts, groups = grouped()
    acts = [t.requires_grad_(True) for t in acts]
    logits = torch.randn(24, 4, requires_grad=True)
    loss, parts = DAILoss(3, alpha=0.0)(logits, (torch.arange(6) % 4).repeat_interleave(4), acts, GroupIndex.blocks(6, 4))
    loss.backward()
    assert all(t.grad is None for t in acts) and parts["dai"].shape == (3,)
    assert (parts["dai"] > 0).all()


def test_bf16_activations_sum_in_fp32():
    acts, groups = grouped(k=8, m=4, shapes=((16, 8, 8), (32,)), seed=3)
    a16 = [t.bfloat16().requires_grad_(True) for t in acts]
    loss, parts = DAILoss(2)(torch.randn(32, 3), (torch.arange(8) % 3).repeat_interleave(4), a16, GroupIndex.blocks(8, 4))
    assert parts["dai"].dtype == torch.float32
    ref = torch.stack([dai_loss_pairwise(t.detach().float(), groups) for t in a16])
    torch.testing.assert_close(parts["dai"], ref, rtol=1e-4, atol=1e-7)
    loss.backward()
    assert all(t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad).all() for t in a16)


def test_groupindex_blocks_equals_groupindex_of_ids():
    a = GroupIndex.blocks(5, 3)
    b = GroupIndex(torch.arange(5).repeat_interleave(3))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.counts, b.counts)
    assert (a.n, a.block, a.n_pairs) == (b.n, b.block, b.n_pairs)


def test_doctests_of_the_public_api():
    import dainv.invariance.loss
    import dainv.invariance.score

    attempted = {}
    for mod in (dainv.invariance.loss, dainv.invariance.score, dainv.augment, dainv.models):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, mod.__name__
        attempted[mod.__name__] = result.attempted
    assert attempted["dainv.invariance.loss"] >= 5  # dai_loss, DAILoss
    assert attempted["dainv.invariance.score"] >= 3  # invariance_scores
    assert attempted["dainv.augment"] >= 4  # apply
    assert attempted["dainv.models"] >= 2  # build_model


def count_steps(width: float = 0.25, batch: int = 128, views: int = 8, augment: bool = False) -> dict[str, OpCounter]:
    """Operators of one eager training step per arm, after two warm-up steps."""
    torch.manual_seed(0)
    net = build_model("allcnnc", 10, width=width).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True, foreach=True)
    x0 = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch // views,)).repeat_interleave(views)  # a seed's views share its label
    layers = dainv.models.resolve_layers(net, "auto")
    groups = GroupIndex.blocks(batch // views, views)
    gen = torch.Generator().manual_seed(0)
    scheme = get_scheme("heavier")

    def inputs():
        x = apply(x0, sample_params(scheme, batch, gen)) if augment else x0
        return x.contiguous(memory_format=torch.channels_last)

    def baseline():
        loss = F.cross_entropy(net(inputs()).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def with_dai(crit):
        def step():
            logits, acts = net(inputs(), taps=layers)
            loss, parts = crit(logits, y, acts, groups)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    arms = {"baseline": baseline, "dai": with_dai(DAILoss(layers, 0.1, fused=True)),
            "control": with_dai(DAILoss(layers, 0.0, fused=True))}  # fmt: skip
    out = {}
    for name, step in arms.items():
        step()
        step()
        with OpCounter() as c:
            step()
        out[name] = c
    return out


def test_dai_step_is_launch_lean_and_sync_free():
    counts = count_steps(width=0.125, batch=32)  # the operators do not depend on the sizes
    base, dai, ctl = (counts[a].summary()["kernels"] for a in ("baseline", "dai", "control"))
    # Kernel-launching operators (views left out), without augmentation: baseline 79, DAI 141
    # with both denominators of Eq. 3 (124 with the all-pairs one alone; 785 operators with one
    # loss call per layer). The full training step's bound (1.5×) is in test_benchmarks.
    assert dai <= 1.8 * base, (base, dai, counts["dai"].ops.most_common(20))
    assert ctl <= dai
    for name, c in counts.items():
        assert c.host_ops == {}, (name, c.host_ops)


def test_augmentation_in_the_step_is_sync_free():
    counts = count_steps(width=0.125, batch=32, views=4, augment=True)
    for name, c in counts.items():
        assert c.host_ops == {}, (name, c.host_ops)
    with OpCounter() as c:
        params = sample_params(get_scheme("heavier"), 16, torch.Generator().manual_seed(1))
        apply(torch.rand(16, 3, 32, 32), params, "nearest")
    assert c.host_ops == {}, c.host_ops


def test_same_class_denominator_is_sync_free():
    acts, groups = grouped()
    crit = DAILoss(3, denominator="same_class")
    labels = (torch.arange(6) % 3).repeat_interleave(4)
    logits = torch.randn(24, 3)
    gi = GroupIndex(groups)
    crit(logits, labels, acts, gi)
    with OpCounter() as c:
        loss, _ = crit(logits, labels, [a.requires_grad_(True) for a in acts], gi)
        loss.backward()
    assert c.host_ops == {}, c.host_ops


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_fused_and_per_layer_paths_agree(dtype, alpha):
    """The GPU path (all layers in one concatenated pass) and the CPU path (layer by layer from
    each activation's own memory, channels-last included) give the same loss and gradients."""
    g = torch.Generator().manual_seed(3)
    shapes = [(6, 8, 8), (12, 4, 4), (5,)]
    base = [torch.randn(24, *s, generator=g, dtype=torch.float64) for s in shapes]
    base[0] = base[0].contiguous(memory_format=torch.channels_last)
    logits, labels = torch.randn(24, 4, generator=g), (torch.arange(6) % 4).repeat_interleave(4)
    out = {}
    for fused in (True, False):
        acts = [a.detach().to(dtype).requires_grad_() for a in base]
        acts[0] = acts[0].contiguous(memory_format=torch.channels_last).detach().requires_grad_()
        crit = DAILoss(["a", "b", "c"], alpha=alpha, fused=fused)
        loss, parts = crit(logits, labels, dict(zip("abc", acts)), GroupIndex.blocks(6, 4))
        if alpha:
            loss.backward()
        out[fused] = (parts["dai"].double(), [None if a.grad is None else a.grad.double() for a in acts])
    tol = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out[True][0], out[False][0], rtol=tol, atol=tol)
    for ga, gb in zip(out[True][1], out[False][1]):
        assert (ga is None) == (gb is None)
        if ga is not None:
            torch.testing.assert_close(ga, gb, rtol=tol, atol=tol * ga.abs().max().item())


def test_same_class_step_launches_what_the_all_pairs_step_does():
    """Both denominators come from one pass: training with either launches the same kernels."""
    counts = {}
    for denom in ("all", "same_class"):
        torch.manual_seed(0)
        acts, groups = grouped(k=16, m=8, shapes=((8, 8, 8), (16, 4, 4), (10,)))
        labels = (torch.arange(16) % 10).repeat_interleave(8)
        crit = DAILoss(3, denominator=denom, fused=True)
        gi = GroupIndex.blocks(16, 8)
        crit(torch.randn(128, 10), labels, acts, gi)
        with OpCounter() as c:
            loss, _ = crit(torch.randn(128, 10), labels, [a.requires_grad_(True) for a in acts], gi)
            loss.backward()
        counts[denom] = c.summary()["kernels"]
        assert c.host_ops == {}
    assert counts["same_class"] <= 1.1 * counts["all"], counts


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("denominator", ["all", "same_class"])
def test_both_denominators_in_the_training_layout_against_brute_force(fused, denominator):
    """The training layout's one pass gives Eq. 3 under both denominators (logged), and the
    gradient of the trained one, as the O(B²·D) pairwise formula does (float64)."""
    k, m = 6, 4
    acts, groups = grouped(k=k, m=m, shapes=((3, 4, 4), (7,), (2, 3, 3)), seed=11)
    acts[0] = acts[0].contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 2, 0, 1, 2, 0]).repeat_interleave(m)
    a = [t.double().requires_grad_(True) for t in acts]
    b = [t.double().requires_grad_(True) for t in acts]
    crit = DAILoss(3, alpha=0.3, denominator=denominator, fused=fused)
    logits = torch.randn(k * m, 3, dtype=torch.float64)
    loss, parts = crit(logits, labels, a, GroupIndex.blocks(k, m))
    for key, den in (("dai_all", "all"), ("dai_same_class", "same_class")):
        ref = torch.stack([dai_loss_pairwise(t.detach(), groups, labels, den) for t in b])
        torch.testing.assert_close(parts[key], ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(parts["dai"], parts["dai_" + denominator])
    loss.backward()
    refs = [dai_loss_pairwise(t, groups, labels, denominator) for t in b]
    (0.3 * sum(w * r for w, r in zip(layer_weights(3, 1.0), refs))).backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-7, atol=1e-12)


def test_blocks_layout_refuses_views_with_different_labels():
    acts, _ = grouped(k=3, m=2, shapes=((4,),))
    with pytest.raises(RuntimeError, match="every view of a seed"):
        DAILoss(1)(torch.randn(6, 3), torch.arange(6) % 3, acts, GroupIndex.blocks(3, 2))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "per-layer"])
@pytest.mark.parametrize("denominator", ["all", "same_class"])
def test_bf16_backward_rounds_once_in_a_nearly_invariant_layer(fused, denominator):
    """Views within 1 % of their seed (a nearly invariant layer): the gradient's two terms, the
    seed sums and the activation times its coefficient, nearly cancel. The bf16 gradient must
    be the exact one (float64, from the same bf16 activations) rounded once: within a few bf16
    ulps, not the few % that rounding both terms to bf16 first leaves."""
    g = torch.Generator().manual_seed(5)
    k, m, d = 8, 8, 512
    seeds = torch.randn(k, d, generator=g, dtype=torch.float64) * 3 + 2
    x = (seeds.repeat_interleave(m, 0) * (1 + 0.01 * torch.randn(k * m, d, generator=g, dtype=torch.float64)))
    labels = (torch.arange(k) % 3).repeat_interleave(m)
    grads = {}
    for dtype in (torch.bfloat16, torch.float64):
        a = x.bfloat16().to(dtype).requires_grad_()  # the same (bf16-representable) values
        crit = DAILoss(1, alpha=0.5, denominator=denominator, fused=fused)
        loss, _ = crit(torch.zeros(k * m, 3, dtype=torch.float64), labels, [a], GroupIndex.blocks(k, m))
        loss.backward()
        grads[dtype] = a.grad.double()
    exact, got = grads[torch.float64], grads[torch.bfloat16]
    err = ((got - exact).norm() / exact.norm()).item()
    assert err < 2 * 2**-8, err  # bf16 rounding of the result alone: ≤ 2^-9 relative per element
