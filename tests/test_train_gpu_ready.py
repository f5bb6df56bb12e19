"""The training step as a GPU runs it (issue 10): no host sync inside a step, the compiled
whole step, CUDA-graph and backend settings, eval/monitor frequencies; and first-contact
output (issue 13): named layers in the epoch line, a host-counted progress bar, NaN messages,
extending a finished run."""

from __future__ import annotations

import collections
import json

import pytest
import torch
from bench_ops import OpCounter

import dainv.train as tr
from dainv.data import random_dataset
from dainv.errors import ConfigError
from dainv.train import EpochLog, NonFiniteLoss, Trainer, split_batch, train

DATA = random_dataset(256, 128)
def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arm", ["baseline", "dai", "control"])
def test_no_host_sync_or_host_tensor_in_a_training_step(arm, tiny):
    t = Trainer(tiny(arm, "train.monitor_batches=0"), None, data=DATA)
    buf = t.step_buffer(t.steps_per_epoch)
    correct = torch.zeros((), dtype=torch.long)
    t.train_step(0, buf, correct)
    with OpCounter() as c:
        t.train_step(1, buf, correct)
    assert c.ops["_local_scalar_dense"] == 0  # no .item()/float()/bool()
    assert c.host_ops == {}  # no other sync, no tensor from Python data, augmentation included


@pytest.mark.slow  # torch.compile (inductor) of two trainers: ~2 min on 2 loaded cores
def test_compiled_whole_step_matches_eager(tiny):
    """train.compile=true compiles forward with taps + CE + DAI and, through AOTAutograd, their
    backward; the augmentation's random draws and the SGD update stay eager."""
    cfg = tiny("dai", "train.monitor_batches=0", "train.batch_size=16", "model.width=0.0625")
    eager = Trainer(cfg, None, data=DATA)
    comp = Trainer(tiny("dai", "train.monitor_batches=0", "train.batch_size=16", "model.width=0.0625",
                               "train.compile=true"), None, data=DATA)  # fmt: skip
    bufs = [eager.step_buffer(2) for _ in range(2)]
    for s in range(2):
        for t, b in zip((eager, comp), bufs):
            t.train_step(s, b, torch.zeros((), dtype=torch.long))
    torch.testing.assert_close(bufs[1], bufs[0], rtol=1e-3, atol=1e-4)


def test_cuda_graphs_refused_cleanly_without_cuda(tiny):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ConfigError, match="train.cuda_graphs=true needs a CUDA device"):
        Trainer(tiny("dai", "train.cuda_graphs=true", "device=cpu"), None, data=DATA)


def test_backend_settings_in_meta(tmp_path, tiny):
    train(tiny("baseline", "train.epochs=1", "train.monitor_batches=0"), tmp_path / "r", quiet=True, data=DATA)
    meta = json.loads((tmp_path / "r" / "meta.json").read_text())
    assert set(meta["backends"]) >= {"tf32_requested", "cuda_matmul_allow_tf32", "cudnn_allow_tf32", "cudnn_benchmark"}
    assert meta["batch_per_rank"] == 128 and meta["world_size"] == 1


def test_eval_and_monitor_every(tmp_path, tiny):
    run = tmp_path / "r"
    train(tiny("baseline", "train.epochs=3", "train.milestones=[2]", "train.eval_every=2",
                      "train.monitor_every=2"), run, quiet=True, data=DATA)  # fmt: skip
    recs = _metrics(run)
    assert [r["test_acc"] is None for r in recs] == [True, False, False]  # the last always measures
    assert [bool(r["dai_monitor"]) for r in recs] == [False, True, True]
    assert recs[0]["dai"] == {}  # a baseline's L_l come from monitoring only


def test_progress_bar_counts_every_step_on_the_host(tmp_path, monkeypatch, tiny):
    calls = collections.Counter()
    for name in ("step", "interval"):
        orig = getattr(EpochLog, name)

        def spy(self, *a, _n=name, _o=orig):
            calls[_n] += 1
            return _o(self, *a)

        monkeypatch.setattr(EpochLog, name, spy)
    train(tiny("baseline", "train.epochs=2", "train.log_every=1000", "train.monitor_batches=0"),
          tmp_path / "r", quiet=False, data=DATA)  # fmt: skip
    assert calls["step"] == 4 and calls["interval"] == 2  # every step; CE read at epoch ends only


def test_nan_in_epoch_1_does_not_claim_a_checkpoint(tmp_path, monkeypatch, tiny):
    orig = tr.F.cross_entropy
    monkeypatch.setattr(tr.F, "cross_entropy", lambda *a, **k: orig(*a, **k) * float("nan"))
    with pytest.raises(NonFiniteLoss) as e:
        train(tiny("baseline", "train.monitor_batches=0", "train.log_every=1"), tmp_path / "r",
              quiet=True, data=DATA)  # fmt: skip
    assert "No checkpoint was written yet" in str(e.value) and "last good checkpoint" not in str(e.value)


def test_resume_extends_a_finished_run(tmp_path, tiny):
    run = tmp_path / "r"
    cfg = tiny("baseline", "train.epochs=2", "train.milestones=[1]", "train.monitor_batches=0")
    train(cfg, run, quiet=True, data=DATA)
    with pytest.raises(tr.RunError, match="already finished.*--set train.epochs=N"):
        train(None, run, resume=True, quiet=True, data=DATA)
    train(None, run, resume=True, quiet=True, data=DATA, extend_epochs=3)
    assert [r["epoch"] for r in _metrics(run)] == [1, 2, 3]
    assert [r["lr"] for r in _metrics(run)] == pytest.approx([0.01, 0.001, 0.001])  # milestones kept
    meta = json.loads((run / "meta.json").read_text())
    assert [(x["from"], x["to"]) for x in meta["extended"]] == [(2, 3)] and meta["status"] == "finished"
    assert "epochs: 3" in (run / "config.yaml").read_text()
    assert torch.load(run / "checkpoints/final.pt", weights_only=False)["epoch"] == 3
    # A config differing only in train.epochs does the same.
    import dataclasses

    more = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=4))
    train(more, run, resume=True, quiet=True, data=DATA)
    assert [r["epoch"] for r in _metrics(run)][-1] == 4


def test_global_batch_must_split(tmp_path, monkeypatch, tiny):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="global batch 128 must split into 3 process"):
        train(tiny("dai"), tmp_path / "r", quiet=True, data=DATA)
    assert not (tmp_path / "r").exists()
    assert split_batch(128, 8, 2) == (64, 8) and split_batch(128, 1, 4) == (32, 32)


# ---------------------------------------------------------------------------------------------
# One graph per arm (train.compile) and the step that train.cuda_graphs captures (issue 18)


@pytest.mark.parametrize(("arm", "fused"), [("baseline", False), ("dai", False), ("dai", True), ("control", True)])
def test_the_compiled_step_is_one_graph_without_breaks(arm, fused, tiny):
    """torch._dynamo traces forward + taps + CE + DAI (both the CPU per-layer and the fused GPU
    formulation of Eq. 3) as a single graph: nothing splits it into eager pieces."""
    import torch._dynamo

    t = Trainer(tiny(arm, "train.monitor_batches=0"), None, data=DATA)
    t.crit.fused = fused
    x, y = t.make_views(t.sampler.next(t.seeds_per_step), t.views, t.gen)
    torch._dynamo.reset()
    e = torch._dynamo.explain(t._forward_loss)(x, y)
    assert (e.graph_count, e.graph_break_count) == (1, 0), [str(b.reason)[:200] for b in e.break_reasons]


def test_train_compile_asks_for_one_graph(tiny, monkeypatch):
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.update(kw) or fn)
    Trainer(tiny("dai", "train.compile=true", "train.monitor_batches=0"), None, data=DATA)
    assert seen == {"fullgraph": True}


class _CapturableOnCPU(Trainer):
    """The optimizer as ``train.cuda_graphs`` builds it (the learning rate a tensor that the
    schedule fills in place), on the CPU."""

    def _build_model(self):
        super()._build_model()
        t = self.cfg.train
        self.opt = torch.optim.SGD(self.model.parameters(), lr=torch.tensor(t.lr), momentum=t.momentum,
                                   nesterov=t.nesterov, weight_decay=t.weight_decay, foreach=True)  # fmt: skip
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, t.milestones, t.lr_factor)


@pytest.mark.parametrize("arm", ["baseline", "dai"])
def test_the_captured_step_equals_the_eager_step_bit_for_bit(arm, tiny):
    """What a CUDA graph replays — :meth:`Trainer._step` on a fixed input tensor refilled each
    step, the lr read from a tensor — gives the eager step's weights, momenta and logged values
    bit for bit, across an lr milestone (the schedule fills the very tensor the graph reads)."""
    cfg = tiny(arm, "train.batch_size=32", "data.n_train=64", "train.milestones=[1]", "train.monitor_batches=0")
    eager, cap = Trainer(cfg, None, data=DATA), _CapturableOnCPU(cfg, None, data=DATA)
    lr = cap.opt.param_groups[0]["lr"]
    static_idx = torch.zeros(cap.seeds_per_step, dtype=torch.long)
    bufs = [t.step_buffer(eager.steps_per_epoch) for t in (eager, cap)]
    counts = [torch.zeros((), dtype=torch.long) for _ in range(2)]
    for _epoch in range(2):
        for s in range(eager.steps_per_epoch):
            eager.train_step(s, bufs[0], counts[0])
            static_idx.copy_(cap.sampler.next(cap.seeds_per_step))  # what _replay does before replay
            ce, terms, n = cap._step(static_idx)
            bufs[1][s, 0] = ce
            if terms is not None:
                bufs[1][s, 1:] = terms
            counts[1] += n
        assert torch.equal(bufs[0], bufs[1]) and torch.equal(counts[0], counts[1])
        for t in (eager, cap):
            t.sched.step()
        assert cap.opt.param_groups[0]["lr"] is lr  # the same memory: a graph would see the change
        assert float(lr) == pytest.approx(eager.opt.param_groups[0]["lr"], rel=1e-6)
    assert float(lr) == pytest.approx(cfg.train.lr * cfg.train.lr_factor, rel=1e-6)
    for k, v in eager.model.state_dict().items():
        assert torch.equal(v, cap.model.state_dict()[k]), k
    for p, q in zip(eager.model.parameters(), cap.model.parameters()):
        assert torch.equal(eager.opt.state[p]["momentum_buffer"], cap.opt.state[q]["momentum_buffer"])


def test_a_checkpoint_holds_plain_learning_rates(tiny):
    """The captured step's lr tensor is saved as a number (a checkpoint resumes on any device
    and in either mode), and loading refills the tensor the graph reads instead of replacing it."""
    cfg = tiny("dai", "train.batch_size=32", "data.n_train=64", "train.monitor_batches=0")
    cap = _CapturableOnCPU(cfg, None, data=DATA)
    state = cap.resume_state()
    assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)
    lr = cap.opt.param_groups[0]["lr"]
    state["optimizer"]["param_groups"][0]["lr"] = 0.5
    cap.opt.load_state_dict(state["optimizer"])
    assert not isinstance(cap.opt.param_groups[0]["lr"], torch.Tensor)  # torch replaces it ...
    cap2 = _CapturableOnCPU(cfg, None, data=DATA)
    lr = cap2.opt.param_groups[0]["lr"]
    full = {**state, "model": cap2.model.state_dict(), "model_info": cap2.model_info(), "epoch": 0, "step": 0,
            "sampler": cap2.sampler.state_dict(), "aug_generator": cap2.gen.get_state()}  # fmt: skip
    cap2.load_state_dict(full)
    assert cap2.opt.param_groups[0]["lr"] is lr and float(lr) == 0.5  # ... the trainer refills it
