"""The CUDA path on a real GPU (skipped without one; CI has none — run on a lent GPU machine).

What only a GPU can show: that a training step never waits for the host
(``torch.cuda.set_sync_debug_mode("error")`` turns any synchronising call into an error), that
the concatenated DAI loss used on CUDA agrees with the CPU's layer-by-layer path, that
``train.compile`` and ``train.cuda_graphs`` give the eager step's numbers and really replay a
graph, that a CUDA run resumes (on the GPU and on the CPU), that torchrun + NCCL trains, and
that evaluation on the GPU gives the CPU's scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dainv.config import load_config
from dainv.data import random_dataset
from dainv.measure import invariance_profile
from dainv.models import build_model
from dainv.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ARMS = ("baseline", "dai", "control")
# The paper's size (All-CNN-C width 1, B = 128 = 16 seeds × 8 views): what the benchmark times.
# fp32 with TF32 as --preset paper (one compiled graph shared by the tests and `make bench-gpu`).
PAPER_SIZE = ["model.width=1", "train.batch_size=128", "train.monitor_batches=0", "train.precision=fp32"]


def _trainer(arm, *extra, device="cuda", data=None, run=None):
    cfg = load_config(None, overrides=[f"device={device}", "name=cuda-test", *PAPER_SIZE, *extra], arm=arm)
    return Trainer(cfg, run, data=data if data is not None else random_dataset(1024, 256), quiet=True)


def _steps(tr, n):
    buf = tr.step_buffer(n)
    correct = torch.zeros((), dtype=torch.long, device=tr.device)
    tr.net.train()
    for s in range(n):
        tr.train_step(s, buf, correct)
    return buf, correct


@pytest.mark.parametrize("arm", ARMS)
def test_a_training_step_never_waits_for_the_host(arm):
    tr = _trainer(arm)
    _steps(tr, 2)  # warm-up: cuDNN autotuning and the allocator may sync once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        buf, correct = _steps(tr, 3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(torch.isfinite(buf).all()) and int(correct) >= 0


@pytest.mark.parametrize("arm", ["dai", "control"])
def test_cuda_loss_and_gradient_match_a_float64_reference(arm):
    """Same weights, same augmented batch: CE and every L_l on the GPU (concatenated DAI pass,
    strict fp32) equal the CPU's to float32 rounding, and the GPU gradient is as close to a
    float64 CPU reference as the CPU's own float32 gradient is (this network's float32
    gradient is only good to ~1e-3 relative, with or without the DAI terms)."""
    strict = ("train.precision=fp32", "train.tf32=false")
    data = random_dataset(512, 64)
    ref = [_trainer(arm, *strict, device="cpu", data=data) for _ in range(2)]
    gpu = _trainer(arm, *strict, data=data)
    ref[1].model.double()
    ref[1].crit.double()
    gpu.model.load_state_dict(ref[0].model.state_dict())
    x, y = ref[0].make_views(torch.arange(16), 8, torch.Generator().manual_seed(0))
    outs = []
    for tr, xx in ((ref[0], x), (ref[1], x.double()), (gpu, x.cuda())):
        loss, ce, terms, _ = tr._forward_loss(xx, y.to(tr.device))
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in tr.model.parameters()]).cpu().double()
        outs.append((loss.item(), ce.item(), terms.cpu().double(), grad))
    (l32, c32, t32, g32), (_, _, _, g64), (lg, cg, tg, gg) = outs
    assert lg == pytest.approx(l32, rel=1e-4) and cg == pytest.approx(c32, rel=1e-4)
    torch.testing.assert_close(tg, t32, rtol=1e-4, atol=1e-6)
    cpu_err = float((g32 - g64).norm() / g64.norm())
    gpu_err = float((gg - g64).norm() / g64.norm())
    assert gpu_err <= 3 * cpu_err + 1e-5, (gpu_err, cpu_err)


def test_the_compiled_step_equals_the_eager_step():
    data = random_dataset(1024, 64)
    eager, fast = _trainer("dai", data=data), _trainer("dai", "train.compile=true", data=data)
    x, y = eager.make_views(torch.arange(16, device="cuda"), 8, torch.Generator("cuda").manual_seed(0))
    ref, out = eager._core(x, y), fast._core(x, y)
    torch.testing.assert_close(out[0], ref[0], rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(out[2], ref[2], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("arm", ARMS)
def test_the_graph_step_replays_the_eager_step(arm):
    """train.cuda_graphs captures the whole step (views, forward, loss, backward, SGD): its
    steps follow the eager trainer's (same seeds, same generator draws, same lr schedule) up to
    rounding, every replay draws new views, and the lr tensor's milestone reaches the graph."""
    data = random_dataset(512, 64)
    small = ["train.batch_size=128", "train.milestones=[1]"]
    eager, graph = _trainer(arm, *small, data=data), _trainer(arm, *small, "train.cuda_graphs=true", data=data)
    n = 8  # 3 warm-up steps, the capture (replayed at once), 4 more replays
    bufs = []
    for tr in (eager, graph):
        b1, _ = _steps(tr, n)
        tr.sched.step()  # the milestone: lr × 0.1
        b2, _ = _steps(tr, n)
        bufs.append(torch.cat([b1, b2]))
    assert graph._graph is not None, "the step was never captured"
    assert float(graph.opt.param_groups[0]["lr"]) == pytest.approx(eager.opt.param_groups[0]["lr"])
    torch.testing.assert_close(bufs[1][:, 0], bufs[0][:, 0], rtol=2e-2, atol=2e-2)  # CE, step by step
    assert len(set(bufs[1][:, 0].tolist())) == 2 * n  # new views at each replay: no repeated CE
    for p, q in zip(eager.model.parameters(), graph.model.parameters()):
        torch.testing.assert_close(q, p, rtol=5e-2, atol=5e-3)


def test_cuda_run_with_graphs_fits_evaluates_and_resumes_on_gpu_and_cpu(tmp_path):
    data = random_dataset(512, 128)
    small = ["train.epochs=2", "train.milestones=[1]", "train.eval_every=1",
             "train.monitor_batches=1", "train.monitor_every=1"]  # fmt: skip
    tr = _trainer("dai", *small, "train.cuda_graphs=true", data=data, run=tmp_path / "g")
    hist = tr.fit()
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["train_ce"]) for h in hist)
    # Straight 2 epochs vs 1 + resume 1, eager on the GPU: the same run up to cuDNN's
    # non-deterministic kernels (tiny differences), so compare loosely.
    straight = _trainer("dai", *small, data=data, run=tmp_path / "s").fit()
    first = _trainer("dai", *small, "train.epochs=1", data=data, run=tmp_path / "r")
    first.fit()
    state = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    for device in ("cuda", "cpu"):
        again = _trainer("dai", *small, device=device, data=data, run=None)
        again.load_state_dict(state)
        rec = again.run_epoch(_NoLog())
        assert rec is not None and rec["epoch"] == 2
        if device == "cuda":
            assert rec["train_ce"] == pytest.approx(straight[1]["train_ce"], rel=2e-2)


class _NoLog:
    def __getattr__(self, name):
        return lambda *a, **k: None


def test_torchrun_nccl_trains_and_evaluates(tmp_path):
    d = random_dataset(512, 128)
    npz = tmp_path / "rand.npz"
    np.savez(npz, x_train=d.x_train.permute(0, 2, 3, 1).numpy(), y_train=d.y_train.numpy(),
             x_test=d.x_test.permute(0, 2, 3, 1).numpy(), y_test=d.y_test.numpy())  # fmt: skip
    run = tmp_path / "nccl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "dainv", "train", "--arm", "dai", "--epochs", "1", "--out", str(run), "--quiet",
           "--set", f"data.dataset=npz:{npz}", "--set", "model.width=0.25", "--evaluate"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["device"].startswith("cuda"), meta
    assert any(p.name == "scores.npz" for p in run.rglob("scores.npz"))


def test_gpu_evaluation_agrees_with_the_cpu_and_repeats():
    """The transformations are drawn on the evaluation device, so a GPU and a CPU evaluation of
    one seed draw different transformations: the per-layer medians agree, not each score. On
    one device the same seed gives the same scores."""
    torch.manual_seed(0)
    net = build_model("allcnnc", 10, width=0.25).eval()
    images = random_dataset(8, 400).x_test
    kw = dict(transforms=3, seed=0, precision="fp32")
    torch.backends.cudnn.allow_tf32 = False
    try:
        cpu = invariance_profile(net, images, device="cpu", **kw)
        gpu = invariance_profile(net, images, device="cuda", **kw)
        again = invariance_profile(net, images, device="cuda", **kw)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    assert list(cpu) == list(gpu) and all(gpu[k].shape == (400, 3) for k in gpu)
    for k in cpu:
        assert abs(np.nanmedian(gpu[k]) - np.nanmedian(cpu[k])) < 0.03, k
        np.testing.assert_allclose(again[k], gpu[k], rtol=1e-4, atol=1e-5, err_msg=k)
