"""Training with and without the DAI loss (docs/method.md, the training recipe; docs/architecture.md): the recipe
is :meth:`Trainer.train_step`, the rest of :class:`Trainer` bookkeeping; :func:`train` is a run in its folder."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dainv import checkpoint, runio
from dainv.augment import apply as apply_aug
from dainv.augment import get_scheme, sample_params
from dainv.config import (
    RunConfig,
    differences,
    dump_yaml,
    from_dict,
    model_kwargs,
    read_run_config,
    to_dict,
    validate,
)
from dainv.data import Dataset, images_to_float, load_configured
from dainv.errors import ConfigError, RunError, TimeLimitReached
from dainv.invariance import DAILoss, GroupIndex
from dainv.models import build_model, probe, resolve_layers
from dainv.runtime import (
    autocast,
    configure_backends,
    dist_info,
    full_fp32,
    resolve_device,
    resolve_precision,
)

__all__ = ["Trainer", "train", "NonFiniteLoss", "SeedSampler", "split_batch", "EpochLog", "epoch_line"]


class NonFiniteLoss(RunError):
    """A loss term became NaN or Inf; the message names the epoch, step and term."""


def split_batch(batch_size: int, views: int, world: int) -> tuple[int, int]:
    """The GLOBAL ``train.batch_size`` (the same recipe on 1 or N processes) → (samples, seeds) per rank."""
    if batch_size % (world * views):
        raise ConfigError(
            f"invalid setting train.batch_size: the global batch {batch_size} must split into "
            f"{world} process(es) × {views} views per seed (a multiple of {world * views})"
        )
    per_rank = batch_size // world
    return per_rank, per_rank // views


class SeedSampler:
    """Seed images from a per-pass random permutation that continues across epochs; pass ``p``'s is drawn from
    seed ``(seed, p)``, so the state is (pass, position). Under DDP each rank draws ``K × world`` and keeps its slice."""

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.seed, self.device = n, seed, device
        self.load_state_dict({"pass_index": 0, "pos": 0})

    def _permutation(self, p: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
        return torch.randperm(self.n, generator=g).to(self.device)

    def next(self, k: int) -> torch.Tensor:
        parts = []
        while k > 0:
            take = min(k, self.n - self.pos)
            parts.append(self._perm[self.pos : self.pos + take])
            self.pos += take
            k -= take
            if self.pos == self.n:
                self.pass_index, self.pos = self.pass_index + 1, 0
                self._perm = self._permutation(self.pass_index)
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index, self.pos = int(state["pass_index"]), int(state["pos"])
        self._perm = self._permutation(self.pass_index)


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm (batch statistics) that leaves the running statistics untouched."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved, was_training = [m.track_running_stats for m in bns], model.training
    model.train()
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s
        model.train(was_training)


class Trainer:
    """A run's state (model, optimizer, schedule, sampler, generators, history). A step runs eager, compiled
    (``train.compile``: forward + loss as one graph) or as a replayed CUDA graph (``train.cuda_graphs``)."""

    def __init__(self, cfg: RunConfig, run_dir: Path | None, data: Dataset | None = None, quiet: bool = False,
                 download: bool | None = None, *, validated: bool = False) -> None:  # fmt: skip
        if not validated:  # train() validates before it touches the run folder
            validate(cfg)
        dev = resolve_device(cfg.device)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=resolve_precision(cfg.train.precision, dev)))
        self.cfg, t = cfg, cfg.train
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.quiet = quiet
        self.rank, self.world, local_rank = dist_info()
        self.distributed, self.is_main = self.world > 1, self.rank == 0
        if dev.type == "cuda" and self.distributed:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        self.device = dev
        if t.cuda_graphs and (dev.type != "cuda" or self.world > 1):
            raise ConfigError(
                "train.cuda_graphs=true needs a CUDA device and one process (the whole step is "
                "replayed as a CUDA graph; DDP's all-reduce is not captured); here leave it "
                "false (train.compile=true compiles the step instead)"
            )
        self._core = torch.compile(self._forward_loss, fullgraph=True) if t.compile else self._forward_loss
        self._graph, self._static, self._warmup = None, None, 3  # eager steps before the CUDA-graph capture
        self.backends = configure_backends(dev, t.tf32)
        self.batch_per_rank, self.seeds_per_step = split_batch(t.batch_size, t.views, self.world)
        self.views = t.views
        if data is None:
            data = load_configured(cfg.data, download=download)
            if self.is_main:  # skipped files, checksums, the cache: said even with --quiet
                for note in getattr(data, "notes", ()):
                    print(f"data: {note}", file=sys.stderr)
        self.data = data = data.subset(cfg.data.n_train, cfg.data.n_test).to(dev)
        self._build_model()
        n = data.x_train.shape[0]
        self.steps_per_epoch = math.ceil(n / t.batch_size)
        self.sampler = SeedSampler(n, cfg.seed, dev)
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed * 7919 + 17 + self.rank)
        self.scheme = get_scheme(cfg.augment.scheme, cfg.augment.sampling)
        self.crit = DAILoss(self.layers, t.alpha, t.alpha_ratio, t.denominator).to(dev)  # Eq. 3 and 4
        self.groups = GroupIndex.blocks(self.seeds_per_step, t.views, dev)  # built once: no syncs
        # Views-per-seed arms measure L_l on their training batches; M = 1 cannot (no pairs).
        self.tap_train = t.views > 1
        self.epoch, self.step = 0, 0  # completed epochs, completed optimizer steps
        self.saved_epoch: int | None = None  # epoch of the last checkpoint written
        self.history: list[dict[str, Any]] = []
        self.partial: dict[str, Any] | None = None  # accumulators of an interrupted epoch
        self.complete = False  # trained to its last epoch, final.pt written (even if then stopped)
        self._stop_signal: int | None = None
        # --time-limit (time.monotonic()): the stop leaves time for the longest interval, epoch end, save
        self.deadline: float | None = None
        self.timed_out, self._costs = False, {"interval": 0.0, "epoch_end": 0.0, "save": 1.0}

    def _build_model(self) -> None:
        cfg, t, dev = self.cfg, self.cfg.train, self.device
        # Same initial weights for the same seed, whatever the arm: a generator nothing else touches.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(cfg.model.name, self.data.num_classes, self.data.image_shape[0], **self._model_kwargs())
        model = model.to(dev)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.distributed and t.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model  # the bare module: state_dict, eval, checkpoints
        self.net: nn.Module = model
        if self.distributed:
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        try:  # depth order: α_l grows with depth
            self.layers = resolve_layers(model, t.layers)
        except ValueError as e:
            raise ConfigError(f"invalid setting train.layers: {e}") from None
        try:  # the network fits the data (logits, one activation per image) before any step
            x = images_to_float(self.data.x_train[:2])
            probe(model, x, self.data.num_classes, self.layers, f"model {cfg.model.name!r}")
        except ValueError as e:
            raise ConfigError(f"invalid setting model.name: {e}") from None
        # A captured step reads lr from device memory: a tensor MultiStepLR fills in place reaches the graph.
        self.opt = torch.optim.SGD(
            model.parameters(),
            lr=torch.tensor(t.lr, dtype=torch.float32, device=dev) if t.cuda_graphs else t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov and t.momentum > 0,
            weight_decay=t.weight_decay,
            **({"fused": True} if dev.type == "cuda" else {"foreach": True}),
        )
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, t.milestones, t.lr_factor)

    # ------------------------------------------------------------------ the recipe
    def train_step(self, step_in_epoch: int, buf: torch.Tensor, correct: torch.Tensor) -> None:
        """One step (docs/method.md, training recipe): K seeds × M views, Eq. 4, SGD. No host sync:
        the CE and L_l go into ``buf`` (read at the logging interval), the correct count into ``correct``."""
        k = self.seeds_per_step
        idx = self.sampler.next(k * self.world)[self.rank * k : (self.rank + 1) * k]
        ce, terms, n_correct = self._replay(idx) if self.cfg.train.cuda_graphs else self._step(idx)
        buf[step_in_epoch, 0] = ce
        if terms is not None:
            buf[step_in_epoch, 1:] = terms
        correct += n_correct

    def _step(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The step on device tensors alone — views, forward, loss, backward, SGD — so that
        ``train.cuda_graphs`` captures all of it: seed indices in; CE, L_l, correct count out."""
        x, y = self.make_views(idx, self.views, self.gen)
        loss, ce, terms, logits = self._core(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return ce, terms, (logits.argmax(1) == y).sum()

    def _replay(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """:meth:`_step` as one CUDA graph: eager warm-up steps on a side stream (a graph captured before cuDNN
        autotuning, lazy allocations and momentum buffers would replay their creation), one capture with the
        augmentation generator registered, then a replay per step. Outputs live in the graph's memory."""
        if self._graph is None and self._warmup > 0:
            self._warmup -= 1
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                out = self._step(idx)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return out
        if self._graph is None:
            static_idx = idx.clone()
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.gen)
            with torch.cuda.graph(graph):
                self._static = (static_idx, self._step(static_idx))
            self._graph = graph  # captured, not run: this step runs as the first replay
        static_idx, out = self._static
        static_idx.copy_(idx)
        self._graph.replay()
        return out

    def step_buffer(self, steps: int) -> torch.Tensor:
        """A row per step for :meth:`train_step`: CE, L_l under all pairs, under same-class pairs."""
        return torch.zeros(steps, 1 + 2 * len(self.layers), device=self.device)

    def make_views(self, idx: torch.Tensor, views: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``idx``, each repeated ``views`` times and augmented independently → (x, y)."""
        if views > 1:  # repeat the indices, not the images: one gather of the repeated batch
            idx = idx.repeat_interleave(views)
        # index_select, not x_train[idx]: the same copy, ~3× faster for uint8 images on a CPU.
        x = images_to_float(self.data.x_train.index_select(0, idx))
        y = self.data.y_train.index_select(0, idx)
        params = sample_params(self.scheme, x.shape[0], gen, x.device)
        fmt = torch.channels_last if self.cfg.train.channels_last else None
        return apply_aug(x, params, self.cfg.augment.interpolation, memory_format=fmt), y

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, ...]:
        """Forward (tapping the DAI layers where M > 1) and loss: the part ``train.compile`` compiles."""
        with autocast(self.device, self.cfg.train.precision):
            if self.tap_train:
                logits, acts = self.net(x, taps=self.layers)
            else:
                logits, acts = self.net(x), None
        loss, ce, terms = self._loss(logits, y, acts, self.groups)
        return loss, ce, terms, logits.detach()

    def _loss(self, logits: torch.Tensor, y: torch.Tensor, acts: dict[str, torch.Tensor] | None,
              groups: GroupIndex) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Eq. 4 → (loss, CE, None or the (2·L,) L_l under all pairs then same-class pairs), detached."""
        if acts is None:
            ce = F.cross_entropy(logits.float(), y)
            return ce, ce.detach(), None
        loss, parts = self.crit(logits, y, acts, groups)
        return loss, parts["ce"], parts["dai_both"].view(-1)

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def monitor_dai(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean L_l per layer (all pairs, same-class pairs) on ``train.monitor_batches`` fixed K×8-view batches."""
        nb, bs = self.cfg.train.monitor_batches, self.cfg.train.batch_size
        if nb == 0:
            return {}, {}
        k = bs // 8 if bs >= 16 else 2
        g = torch.Generator().manual_seed(self.cfg.seed + 2**20)
        idx = torch.randperm(self.data.x_train.shape[0], generator=g)[: nb * k].to(self.device)
        groups = GroupIndex.blocks(k, 8, self.device)
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2**21)
        sums = torch.zeros(2 * len(self.layers), device=self.device)
        with frozen_bn_stats(self.model):
            for b in range(nb):
                x, y = self.make_views(idx[b * k : (b + 1) * k], 8, g)
                with autocast(self.device, self.cfg.train.precision):
                    logits, acts = self.model(x, taps=self.layers)
                sums += self._loss(logits, y, acts, groups)[2]
        return self._by_layer(sums / nb)

    def _by_layer(self, both: torch.Tensor) -> tuple[dict[str, float], dict[str, float]]:
        """(2·L,) L_l under all pairs then same-class pairs → one {layer: value} dict each."""
        vals, n = both.tolist(), len(self.layers)
        return dict(zip(self.layers, vals[:n])), dict(zip(self.layers, vals[n:]))

    @torch.no_grad()
    def test_accuracy(self) -> float:
        """Single-view top-1 accuracy on the test split, BN in eval mode."""
        t, d, bs = self.cfg.train, self.data, self.cfg.eval.batch_size
        was = self.model.training
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for i in range(0, d.x_test.shape[0], bs):
            x = images_to_float(d.x_test[i : i + bs])
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with full_fp32(), autocast(self.device, t.precision):  # TF32 only in a training step
                logits = self.model(x)
            correct += (logits.argmax(1) == d.y_test[i : i + bs]).sum()
        self.model.train(was)
        return correct.item() / d.x_test.shape[0]

    # ------------------------------------------------------------------ state
    def model_info(self) -> dict[str, Any]:
        d = self.data
        return checkpoint.model_info(self.cfg.model.name, d.num_classes, d.image_shape[0], model=self.model,
                                     **self._model_kwargs())  # fmt: skip

    def _model_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs; a user's factory (``module:factory``) also gets the layers to tap."""
        kw = model_kwargs(self.cfg.model)
        if ":" in self.cfg.model.name and self.cfg.train.layers != "auto":
            kw["layers"] = list(self.cfg.train.layers)
        return kw

    def resume_state(self) -> dict[str, Any]:
        """The checkpoint entries beyond the public format that resume a run bit for bit."""
        opt = self.opt.state_dict()
        for g in opt["param_groups"]:  # plain numbers, whatever the step reads them from
            g.update({k: float(g[k]) for k in ("lr", "initial_lr") if k in g})
        return {
            "optimizer": opt, "scheduler": self.sched.state_dict(), "sampler": self.sampler.state_dict(),
            "aug_generator": self.gen.get_state(), "aug_generator_device": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history, "partial": self.partial,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint loaded onto the CPU; model and optimizer state move to this device."""
        info, mine = state.get("model_info", {}), self.model_info()
        if info != mine:
            raise RunError(
                f"checkpoint is for a different model/config ({info}) than this run ({mine}); "
                "resume it with its own run folder and config"
            )
        self.model.load_state_dict(state["model"])
        lr = self.opt.param_groups[0]["lr"]
        self.opt.load_state_dict(state["optimizer"])  # casts the state to the parameters' device
        if isinstance(lr, torch.Tensor):  # the captured step's lr tensor stays the one it reads
            for g in self.opt.param_groups:
                g["lr"] = lr.fill_(float(g["lr"]))
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.saved_epoch = self.epoch
        self.sampler.load_state_dict(state["sampler"])
        gens = state.get("aug_generators")
        if gens is not None and len(gens) != self.world:
            raise RunError(
                f"checkpoint was written by {len(gens)} processes, this run has {self.world}; "
                "resume with the same number of processes (torchrun --nproc_per_node)"
            )
        gen_state = gens[self.rank] if gens is not None else state["aug_generator"]
        for note in checkpoint.restore_rng(state, self.gen, gen_state):
            if self.is_main:
                print(f"resume: {note}; the rest of the run is not bitwise the same", file=sys.stderr)
        self.history = list(state["history"])
        self.partial = state.get("partial")

    def save_checkpoint(self, final: bool = False) -> None:
        """Rank 0 writes; under DDP every rank must call it (the ranks' generator states are gathered)."""
        gens = [self.gen.get_state()]
        if self.distributed:
            gens = [None] * self.world
            dist.all_gather_object(gens, self.gen.get_state().cpu())
        self.saved_epoch = self.epoch
        if not self.is_main or self.run_dir is None:
            return
        ck = self.run_dir / "checkpoints"
        names = ["last.pt"] + (["final.pt"] if final else [])
        if self.partial is None and self.epoch in self.cfg.train.keep_epochs:
            names.append(f"epoch-{self.epoch:04d}.pt")
        extra = {**self.resume_state(), "aug_generators": gens}
        for name in names:
            checkpoint.save_checkpoint(ck / name, self.model, info=self.model_info(), config=to_dict(self.cfg),
                                       epoch=self.epoch, step=self.step, **extra)  # fmt: skip
        # metrics.jsonl mirrors the history stored in the checkpoint: never ahead, never behind.
        runio.write_metrics(self.run_dir / "metrics.jsonl", self.history)

    # ------------------------------------------------------------------ loop
    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t)
            t /= self.world
        return t

    def run_epoch(self, log: EpochLog) -> dict[str, Any] | None:
        """One epoch (or the rest of an interrupted one). Returns its record, or None if stopped."""
        t = self.cfg.train
        p = self.partial or {}
        start, elapsed = p.get("step_in_epoch", 0), p.get("elapsed", 0.0)
        buf = p["buf"].to(self.device) if p else self.step_buffer(self.steps_per_epoch)
        correct = p["correct"].to(self.device) if p else torch.zeros((), dtype=torch.long, device=self.device)
        self.net.train()
        t0, checked = time.perf_counter(), start
        tick = t0
        for s in range(start, self.steps_per_epoch):
            self.train_step(s, buf, correct)
            self.step += 1
            done = s + 1
            log.step()
            # Host syncs only at intervals, or at once on a signal (under DDP the ranks agree at intervals).
            interval = done % t.log_every == 0 or done == self.steps_per_epoch
            if interval or (self._stop_signal is not None and not self.distributed):
                stop = self._sync_point(buf, checked, done)
                checked, tick = done, self._cost("interval", tick)
                log.interval(buf[done - 1, 0])
                if stop and done < self.steps_per_epoch:
                    self.partial = {"step_in_epoch": done, "buf": buf.cpu(), "correct": correct.cpu(),
                                    "elapsed": elapsed + time.perf_counter() - t0}  # fmt: skip
                    return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = elapsed + time.perf_counter() - t0
        self.sched.step()
        self.epoch += 1
        self.partial = None
        tick = time.perf_counter()
        rec = self._epoch_record(buf, correct, train_time)
        self._cost("epoch_end", tick)
        return rec

    def _cost(self, what: str, since: float) -> float:
        """Keep the longest duration of ``what`` (the deadline's reserve); returns now."""
        now = time.perf_counter()
        self._costs[what] = max(self._costs[what], now - since)
        return now

    def _past_deadline(self) -> bool:
        """Whether the time left is under 1.5 × (the longest interval + epoch end + save); sets :attr:`timed_out`."""
        if self.deadline is not None and not self.timed_out:
            self.timed_out = time.monotonic() + 1.5 * sum(self._costs.values()) >= self.deadline
        return self.timed_out

    def _epoch_record(self, buf: torch.Tensor, correct: torch.Tensor, train_time: float) -> dict[str, Any]:
        """metrics.jsonl's record; tested and monitored every eval_every/monitor_every epochs and at the last."""
        t = self.cfg.train
        last = self.epoch >= t.epochs
        sums = self._reduce(buf.sum(0) / self.steps_per_epoch)
        n_samples = self.steps_per_epoch * t.batch_size
        acc = self._reduce(correct.double()).item() * self.world / n_samples
        monitor, monitor_sc = self.monitor_dai() if last or self.epoch % t.monitor_every == 0 else ({}, {})
        # L_l of the training (M > 1) or monitoring batches: "dai" all pairs (paper's text), "dai_same_class" (Fig. 2)
        dai, dai_sc = self._by_layer(sums[1:]) if self.tap_train else (dict(monitor), dict(monitor_sc))
        test_acc = self.test_accuracy() if last or self.epoch % t.eval_every == 0 else None
        train_ce = sums[0].item()
        rec = {
            "epoch": self.epoch, "step": self.step, "lr": t.lr * t.lr_factor ** sum(1 for m in t.milestones if m < self.epoch),
            "train_ce": train_ce, "train_acc": acc, "dai": dai, "dai_same_class": dai_sc,
            "dai_monitor": monitor, "dai_monitor_same_class": monitor_sc, "test_acc": test_acc,
            "epoch_time_s": train_time, "samples_per_s": n_samples / train_time,
            # The 1-min load average and the core count: timings from a loaded machine are flagged.
            "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpu_count": os.cpu_count(),
            "train_loss": train_ce,
        }  # fmt: skip
        if t.alpha > 0:
            trained = dai_sc if t.denominator == "same_class" else dai
            rec["train_loss"] = (1 - t.alpha) * train_ce + sum(a * trained[la] for a, la in zip(self.crit.alphas, self.layers))
        self.history.append(rec)
        return rec

    def _sync_point(self, buf: torch.Tensor, a: int, b: int) -> bool:
        """The interval's host sync: NaN check and stop flag, agreed by every rank in one
        all_reduce (a NaN or a signal on any rank stops all). Returns whether to stop."""
        chunk = buf[a:b]
        flags = torch.stack([(~torch.isfinite(chunk)).any().float(), torch.zeros((), device=chunk.device)])
        flags[1] = 0.0 if self._stop_signal is None and not self._past_deadline() else 1.0
        if self.distributed:
            local_bad = flags[0].clone()
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            if flags[0].item() and not local_bad.item():
                raise NonFiniteLoss(
                    f"training stopped: a loss became non-finite on another process at epoch "
                    f"{self.epoch + 1} (that process names the term). {self._kept()}"
                )
        bad, stop = flags.tolist()
        if bad:
            bad = (~torch.isfinite(chunk)).nonzero()[0].tolist()
            step_in_epoch, term, n = a + bad[0], bad[1], len(self.layers)
            layer, den = self.layers[(term - 1) % n], "all-pairs" if term <= n else "same-class"
            name = "cross-entropy (CE)" if term == 0 else f"DAI loss L_l at layer {layer} ({den} denominator)"
            raise NonFiniteLoss(
                f"training stopped: the {name} became {chunk[bad[0], term].item()} at epoch "
                f"{self.epoch + 1}, step {step_in_epoch + 1} of {self.steps_per_epoch} (global step "
                f"{self.step - (b - 1 - step_in_epoch)}). {self._kept()}"
            )
        if stop and self._stop_signal is None and not self.timed_out:
            self._stop_signal = signal.SIGTERM
        return bool(stop)

    def _kept(self) -> str:
        if self.saved_epoch is None or self.run_dir is None:
            return (
                "No checkpoint was written yet, so there is nothing to resume: start again with "
                "--force, with a lower learning rate (train.lr) or precision fp32."
            )
        return (
            f"The last good checkpoint is kept (epoch {self.saved_epoch}, checkpoints/last.pt); "
            "try a lower learning rate (train.lr) or precision fp32 in a new run (--out, or "
            "--force); resuming with the same settings repeats the same steps."
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.is_main:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving; "
                  "resume with `dainv train --resume RUN`", file=sys.stderr)  # fmt: skip

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``cfg.train.epochs``, saving as it goes; returns the history. A stop (a signal, on any rank)
        saves and raises :class:`KeyboardInterrupt`, the deadline :class:`TimeLimitReached` (even after the last step)."""
        t = self.cfg.train
        log = EpochLog(self, self.quiet)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        self.complete = self.epoch >= t.epochs  # a resumed run at its end: restored with final.pt
        try:
            while self.epoch < t.epochs:
                rec = self.run_epoch(log)
                stopped = rec is None or self._agree_stop()
                last = self.epoch == t.epochs
                tick = time.perf_counter()
                if rec is None:
                    self.save_checkpoint()
                elif self.epoch % t.checkpoint_every == 0 or last or stopped or self.epoch in t.keep_epochs:
                    self.save_checkpoint(final=last)
                self._cost("save", tick)
                self.complete = last and rec is not None
                if rec is not None:
                    log.epoch(rec)
                if stopped and not last and not self.timed_out:
                    raise KeyboardInterrupt
                if stopped and not last:
                    where = f"epoch {self.epoch}" + (f", step {self.partial['step_in_epoch']}" if self.partial else "")
                    raise TimeLimitReached(
                        f"stopped before the time limit, after {where} of {t.epochs}: checkpoints/last.pt "
                        f"is complete; go on with `dainv train --resume {self.run_dir or 'RUN'}` (exit status 75)"
                    )
            # A stop in the last step or while final.pt was written: complete, but the caller must stop
            # too (a deadline that came with the run's end does not matter).
            if self._agree_stop() and not self.timed_out:
                if self.is_main:
                    print("the stop came at the run's end: it is finished and saved "
                          "(checkpoints/final.pt); stopping here", file=sys.stderr)  # fmt: skip
                raise KeyboardInterrupt
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            log.close()
        return self.history

    def _agree_stop(self) -> bool:
        """Whether to stop now (a signal, the deadline near); under DDP, if any rank says so."""
        if not self.distributed:
            return self._stop_signal is not None or self._past_deadline()
        return self._sync_point(torch.zeros(0, 1, device=self.device), 0, 0)


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10 ce 1.234 train_acc 0.550 test_acc 0.5432 L_l conv1..conv9 0.571 … 0.733 …``."""
    names, vals = list(rec["dai"]), " ".join(f"{v:.3f}" for v in rec["dai"].values())
    dai = "" if not names else f"{names[0]} {vals}" if len(names) == 1 else f"{names[0]}..{names[-1]} {vals}"
    test = "-" if rec.get("test_acc") is None else f"{rec['test_acc']:.4f}"
    return (
        f"epoch {rec['epoch']}/{epochs} ce {rec['train_ce']:.3f} "
        f"train_acc {rec['train_acc']:.3f} test_acc {test} "
        f"{f'L_l {dai} ' if dai else ''}{rec['samples_per_s']:.0f} samples/s"
    )


class EpochLog:
    """The split line, progress bar, epoch lines and TensorBoard scalars of the main process. The bar
    counts steps on the host (no device sync); the CE it shows is read at the logging interval."""

    def __init__(self, trainer: Trainer, quiet: bool) -> None:
        self.tr, self.bar, self.writer = trainer, None, None
        tr, t = trainer, trainer.cfg.train
        if not tr.is_main:
            return
        k, m = tr.seeds_per_step, tr.views
        distinct = min(tr.data.x_train.shape[0], tr.steps_per_epoch * k * tr.world)
        per_step = f"{k} seeds × {m} views = {k * m} samples per step"
        if tr.world > 1:
            per_step += f" on each of {tr.world} ranks (global batch {t.batch_size})"
        print(f"{per_step}; {tr.steps_per_epoch} steps per epoch; {distinct} distinct images per "
              f"epoch; alpha={t.alpha}; {tr.device} {t.precision}", file=sys.stderr)  # fmt: skip
        if not quiet:
            from tqdm.auto import tqdm
            done = tr.epoch * tr.steps_per_epoch + (tr.partial or {}).get("step_in_epoch", 0)
            self.bar = tqdm(total=t.epochs * tr.steps_per_epoch, initial=done, unit="step",
                            dynamic_ncols=True, desc=tr.cfg.name, mininterval=1.0)  # fmt: skip
        if tr.run_dir is not None:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(tr.run_dir / "tb"))

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def interval(self, ce: torch.Tensor) -> None:
        if self.bar is not None:
            self.bar.set_postfix(epoch=self.tr.epoch + 1, ce=f"{float(ce):.3f}")

    def epoch(self, rec: dict[str, Any]) -> None:
        if not self.tr.is_main:
            return
        line = epoch_line(rec, self.tr.cfg.train.epochs)
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr)
        measured = rec.get("test_acc") is not None or bool(rec.get("dai_monitor"))
        if self.writer is not None and measured:  # only at the eval/monitor intervals
            for key in ("train_ce", "train_loss", "train_acc", "test_acc", "lr", "samples_per_s"):
                if rec.get(key) is not None:
                    self.writer.add_scalar(key, rec[key], rec["epoch"])
            for k, v in rec["dai"].items():
                self.writer.add_scalar(f"dai/{k}", v, rec["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _resume_config(cfg: RunConfig | None, run_dir: Path, extend_epochs: int | None) -> RunConfig:
    """The run's own config; ``cfg`` (or ``extend_epochs``) may differ from it in train.epochs only."""
    if not runio.is_run_dir(run_dir):
        if runio.run_state(run_dir) == "incomplete":
            raise RunError(
                f"--resume {run_dir}: an incomplete run folder (killed while it was being created, "
                "before training started: config.yaml but no meta.json); nothing is lost — start it "
                f"again from scratch with the same command and --force (or delete {run_dir})"
            )
        raise RunError(f"--resume {run_dir}: not a dainv run folder (it needs config.yaml and meta.json)")
    saved = read_run_config(run_dir / "config.yaml")
    runio.read_meta(run_dir)  # a damaged meta.json: say so now
    if cfg is not None:
        if diff := differences(cfg, saved, length=False):
            shown = "; ".join(f"{k} = {t!r} there, {m!r} given" for k, t, m in diff[:5])
            raise RunError(
                f"--resume {run_dir}: the config given differs from the run's own ({shown}); "
                "resume without a preset/config/overrides (only train.epochs may be raised)"
            )
        extend_epochs = extend_epochs or cfg.train.epochs
    if extend_epochs is not None and extend_epochs != saved.train.epochs:
        saved = dataclasses.replace(saved, train=dataclasses.replace(saved.train, epochs=int(extend_epochs)))
    return saved


def _restore(trainer: Trainer, run_dir: Path, force: bool, meta: dict[str, Any]) -> dict[str, Any]:
    """Load ``last.pt`` into ``trainer`` (a finished run only if extended) → meta.json's new entries."""
    ck = run_dir / "checkpoints" / "last.pt"
    if not ck.exists():
        return {}
    try:
        state = checkpoint.load_checkpoint(ck)  # on the CPU, whatever device wrote it
    except RunError as e:
        raise RunError(f"{str(e).split('; use another')[0]}; {checkpoint.recovery_hint(run_dir, ck)}") from None
    theirs = from_dict(state["config"]) if isinstance(state.get("config"), dict) else None
    checkpoint.check_resumable(state, to_dict(trainer.cfg), to_dict(theirs) if theirs else {}, ck)
    trainer.load_state_dict(state)
    epochs, was = trainer.cfg.train.epochs, theirs.train.epochs
    if epochs < trainer.epoch:
        raise RunError(f"--resume {run_dir}: train.epochs={epochs} is below the {trainer.epoch} epochs already trained")
    if meta.get("status") == "finished" and trainer.epoch >= epochs and not force:
        raise RunError(
            f"{run_dir} is already finished; nothing to resume (to train it longer, raise "
            f"train.epochs: dainv train --resume {run_dir} --set train.epochs=N)"
        )
    extended = {"from": was, "to": epochs, "at": runio.now()} if epochs > was else None
    if extended and trainer.epoch >= was and trainer.is_main:  # its final.pt is final no more
        (run_dir / "checkpoints" / "final.pt").unlink(missing_ok=True)
    out: dict[str, Any] = {"extended": meta.get("extended", []) + [extended]} if extended else {}
    lost = _restore_kept(trainer, run_dir) if trainer.is_main else []
    if lost or meta.get("kept_epochs_lost"):
        out["kept_epochs_lost"] = sorted({*meta.get("kept_epochs_lost", []), *lost})
    if trainer.epoch >= epochs:  # killed between last.pt and final.pt
        trainer.save_checkpoint(final=True)
    return out


def _restore_kept(trainer: Trainer, run_dir: Path) -> list[int]:
    """Make again a kept checkpoint a kill lost (after ``last.pt``) when ``last.pt`` holds exactly
    its epoch; returns the other lost ones, after saying so."""
    ck = run_dir / "checkpoints"
    lost = []
    for e in sorted(set(trainer.cfg.train.keep_epochs)):
        kept = ck / f"epoch-{e:04d}.pt"
        if e > trainer.epoch or kept.exists():
            continue
        if e == trainer.epoch and trainer.partial is None:
            runio.atomic_write(kept, lambda f: f.write((ck / "last.pt").read_bytes()))
            print(f"resume: {kept} (train.keep_epochs) was lost when the run was stopped; made again "
                  "from last.pt, which holds exactly that epoch", file=sys.stderr)  # fmt: skip
        else:
            lost.append(e)
    if lost:
        print(f"warning: {run_dir}: the kept checkpoint(s) of epoch(s) {', '.join(map(str, lost))} "
              f"(train.keep_epochs) are missing — the run was stopped while writing them, or they were "
              f"deleted — and cannot be made again (last.pt holds epoch {trainer.epoch}); their evaluation "
              "and the report's gap vs epochs will lack them (meta.json: kept_epochs_lost)", file=sys.stderr)  # fmt: skip
    return lost


def _data_entries(trainer: Trainer, run_dir: Path, meta: dict[str, Any], accept: bool) -> dict[str, Any]:
    """meta.json's ``data`` (name, counts, SHA-256 per split). A resume on other data than recorded
    is refused unless ``accept``: the run would go on, silently, on other data than it began with."""
    d = trainer.data
    now = {"name": d.name, "source": d.source, "n_train": len(d.y_train), "n_test": len(d.y_test),
           "digest": {"train": d.digest("train"), "test": d.digest("test")}}  # fmt: skip
    was = meta.get("data")
    if not isinstance(was, dict) or not isinstance(was.get("digest"), dict) or was["digest"] == now["digest"]:
        return {"data": now}  # a new run, the same data, or a run begun before dainv recorded it
    splits = " and ".join(s for s in ("train", "test") if was["digest"].get(s) != now["digest"][s])
    if not accept:
        raise RunError(
            f"--resume {run_dir}: the data changed since the run started — the {splits} images of "
            f"{now['name']} ({now['n_train']} training, {now['n_test']} test) are not those recorded in "
            f"{run_dir / 'meta.json'} (data: {was.get('name')}, {was.get('n_train')} training, "
            f"{was.get('n_test')} test; by SHA-256 of the images). Restore the data the run started "
            "with, or start a new run (--force, or another --out); to go on with the changed data "
            "anyway, add --accept-changed-data (recorded in meta.json as data_changed)"
        )
    change = {"at": runio.now(), "splits": splits, "was": was}
    print(f"warning: {run_dir}: resuming on changed data ({splits} images; --accept-changed-data)", file=sys.stderr)
    return {"data": now, "data_changed": meta.get("data_changed", []) + [change]}


def _init_distributed(cfg: RunConfig, world: int, local_rank: int) -> None:
    """Pick this process's GPU before NCCL starts (set_device + device_id), then wait for all."""
    if world > 1 and not dist.is_initialized():
        if resolve_device(cfg.device).type == "cuda":
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    if world > 1:
        dist.barrier()


def _start_meta(trainer: Trainer, run_dir: Path, resume: bool, entries: dict[str, Any]) -> dict[str, Any]:
    """Write config.yaml (``auto`` settings resolved) and then meta.json, with ``entries``, for a new or resumed run."""
    if resume:
        meta = runio.read_meta(run_dir)
        meta["resumed"] = meta.get("resumed", []) + [runio.now()]
        if "extended" in entries:
            runio.atomic_write_text(run_dir / "config.yaml", dump_yaml(trainer.cfg))
    else:  # run_id: tells this run's evaluations from those of a run that --force replaced
        meta = {"started": runio.now(), "command": sys.argv, "run_id": uuid.uuid4().hex}
    meta.update(entries)
    meta.update(status="running", finished=None, world_size=trainer.world, batch_per_rank=trainer.batch_per_rank,
                backends=trainer.backends, **runio.environment(trainer.device))  # fmt: skip
    if resume:
        runio.write_json(run_dir / "meta.json", meta)
    else:
        runio.begin_run(run_dir, dump_yaml(trainer.cfg), meta)
    return meta


def train(
    cfg: RunConfig | None, run_dir: Path, *, resume: bool = False, force: bool = False, quiet: bool = False,
    data: Dataset | None = None, extend_epochs: int | None = None, deadline: float | None = None,
    accept_changed_data: bool = False, download: bool | None = None,
) -> Trainer:  # fmt: skip
    """Train into ``run_dir`` (or resume the run there); returns the trainer. A resume takes the run's
    config.yaml; ``cfg`` may differ only in ``train.epochs``: raising it (or ``extend_epochs``) extends even a finished
    run. ``deadline`` (:func:`time.monotonic`): stop before it, resumably, raising :class:`TimeLimitReached`."""
    run_dir = Path(run_dir)
    rank, world, local_rank = dist_info()
    meta: dict[str, Any] = {}
    if resume:
        cfg = _resume_config(cfg, run_dir, extend_epochs)
        meta = runio.read_meta(run_dir)
    assert cfg is not None, "train(cfg=None) needs resume=True"
    validate(cfg)
    split_batch(cfg.train.batch_size, cfg.train.views, world)
    if rank == 0 and not resume:
        runio.prepare_run_dir(run_dir, force)
    _init_distributed(cfg, world, local_rank)
    lock = runio.RunLock(run_dir)
    if rank == 0:
        lock.acquire()
        runio.remove_stale_temps(run_dir)
    try:
        trainer = Trainer(cfg, run_dir, data=data, quiet=quiet, download=download, validated=True)
        entries = _data_entries(trainer, run_dir, meta, accept_changed_data) if resume or rank == 0 else {}
        if resume:
            entries.update(_restore(trainer, run_dir, force, meta))
        if rank == 0:
            meta = _start_meta(trainer, run_dir, resume, entries)
        _fit(trainer, run_dir, meta, deadline)
        if world > 1:  # leave together: a rank that tears gloo down early can abort a peer
            dist.barrier()
        return trainer
    finally:
        lock.release()
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _fit(trainer: Trainer, run_dir: Path, meta: dict[str, Any], deadline: float | None) -> None:
    """``trainer.fit()`` before ``deadline``; meta.json records the outcome (finished, interrupted, failed)."""
    trainer.deadline = deadline
    t0 = time.perf_counter()
    status = "failed"
    try:
        trainer.fit()
        status = "finished"
    except (KeyboardInterrupt, TimeLimitReached):
        status = "finished" if trainer.complete else "interrupted"
        raise
    finally:
        if trainer.is_main:
            meta["status"] = status
            meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - t0
            meta["train_time_s"] = sum(r["epoch_time_s"] for r in trainer.history)
            if status == "finished":
                meta["finished"] = runio.now()
            with contextlib.suppress(RunError):
                runio.write_json(run_dir / "meta.json", meta)
