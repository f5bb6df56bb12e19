"""Training with and without the DAI loss (SPEC §5), one run folder per run.

The recipe, on one screen (:meth:`Trainer.train_step`): K seeds from a permutation that
continues across epochs, each repeated M times and augmented independently on the device;
one forward pass tapping the DAI layers; ``L = (1 − α)·CE + Σ_l α_l·L_l``; SGD with Nesterov
momentum and step decays. Everything else here is bookkeeping: metrics, checkpoints that
resume bit for bit, signals, locks and DDP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dainv import checkpoint, runio
from dainv.augment import apply as apply_aug
from dainv.augment import get_scheme, sample_params
from dainv.config import RunConfig, dump_yaml, from_dict, model_kwargs, to_dict, validate
from dainv.data import Dataset, images_to_float, load_dataset
from dainv.errors import ConfigError, RunError
from dainv.invariance import GroupIndex, dai_loss, layer_weights
from dainv.models import build_model
from dainv.runtime import autocast, dist_info, resolve_device, resolve_precision

__all__ = [
    "SeedSampler",
    "Trainer",
    "train",
    "resolve_device",
    "NonFiniteLoss",
    "frozen_bn_stats",
    "dist_info",
    "resolve_precision",
]


class NonFiniteLoss(RunError):
    """A loss term became NaN or Inf; the message names the epoch, step and term."""


class SeedSampler:
    """Seed images from a per-pass random permutation that continues across epochs (SPEC §5).

    The state is two integers (pass, position): pass ``p`` uses the permutation drawn from
    seed ``(seed, p)``, so resuming needs no stored permutation. Under DDP every rank holds the
    same sampler, draws ``K × world`` seeds and keeps its own disjoint slice.
    """

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.seed, self.device = n, seed, device
        self.pass_index, self.pos = 0, 0
        self._perm = self._permutation(0)

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
    saved = [m.track_running_stats for m in bns]
    was_training = model.training
    model.train()
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.track_running_stats = s
        model.train(was_training)


@torch.no_grad()
def test_accuracy(
    model: nn.Module,
    data: Dataset,
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 500,
    channels_last: bool = False,
) -> float:
    """Single-view top-1 accuracy on the test split, BN in eval mode."""
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, data.x_test.shape[0], batch_size):
        x = images_to_float(data.x_test[i : i + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x)
        correct += (logits.argmax(1) == data.y_test[i : i + batch_size]).sum()
    model.train(was)
    return correct.item() / data.x_test.shape[0]


class Trainer:
    """Holds a run's state (model, optimizer, schedule, sampler, generators, history)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path | None,
        data: Dataset | None = None,
        quiet: bool = False,
    ) -> None:
        validate(cfg)
        dev = resolve_device(cfg.device)
        prec = resolve_precision(cfg.train.precision, dev)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=prec))
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.quiet = quiet
        self.rank, self.world, local_rank = dist_info()
        self.distributed = self.world > 1
        if dev.type == "cuda" and self.distributed:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        self.device = dev
        self.is_main = self.rank == 0
        t = cfg.train

        if data is None:
            data = load_dataset(cfg.data.dataset, cfg.data.root)
        data = data.subset(cfg.data.n_train, cfg.data.n_test).to(dev)
        self.data = data

        # Same initial weights for the same seed, whatever the arm: build the model first,
        # from a generator that nothing else touches.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(
                cfg.model.name, data.num_classes, data.image_shape[0], **model_kwargs(cfg.model)
            )
        model = model.to(dev)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the bare module: state_dict, eval, checkpoints
        if self.distributed and t.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            self.model = model
        self.net: nn.Module = model
        if self.distributed:
            self.net = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        if t.compile:
            self.net = torch.compile(self.net)

        self.opt = torch.optim.SGD(
            self.model.parameters(),
            lr=t.lr,
            momentum=t.momentum,
            nesterov=t.nesterov and t.momentum > 0,
            weight_decay=t.weight_decay,
            **({"fused": True} if dev.type == "cuda" else {"foreach": True}),
        )
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, t.milestones, t.lr_factor)

        self.views = t.views
        self.seeds_per_step = t.batch_size // t.views
        n = data.x_train.shape[0]
        self.steps_per_epoch = math.ceil(n / (t.batch_size * self.world))
        self.sampler = SeedSampler(n, cfg.seed, dev)
        self.gen = torch.Generator(device=dev).manual_seed(cfg.seed * 7919 + 17 + self.rank)
        self.scheme = get_scheme(cfg.augment.scheme, cfg.augment.sampling)
        # Depth order: α_l grows with depth. ``auto``: every layer the model exposes but its input.
        wanted = [n for n in self.model.tap_names if n != "input"] if t.layers == "auto" else t.layers
        try:
            self.layers = list(self.model.check_taps(wanted))
        except ValueError as e:
            raise ConfigError(f"invalid setting train.layers: {e}") from None
        self.weights = torch.tensor(layer_weights(len(self.layers), t.alpha, t.alpha_ratio), device=dev)
        self.groups = GroupIndex(torch.arange(self.seeds_per_step, device=dev).repeat_interleave(t.views))
        # Views-per-seed arms measure L_l on their training batches; M = 1 cannot (no pairs).
        self.tap_train = t.views > 1
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.history: list[dict[str, Any]] = []
        self.partial: dict[str, Any] | None = None  # accumulators of an interrupted epoch
        self._stop_signal: int | None = None
        self._monitor = self._monitor_batches()

    # ------------------------------------------------------------------ the recipe
    def train_step(self, step_in_epoch: int, buf: torch.Tensor, correct: torch.Tensor) -> None:
        t = self.cfg.train
        k, m = self.seeds_per_step, self.views
        idx = self.sampler.next(k * self.world)[self.rank * k : (self.rank + 1) * k]
        x = images_to_float(self.data.x_train[idx])
        y = self.data.y_train[idx]
        if m > 1:
            x, y = x.repeat_interleave(m, 0), y.repeat_interleave(m, 0)
        params = sample_params(self.scheme, x.shape[0], self.gen, x.device)
        x = apply_aug(x, params, self.cfg.augment.interpolation)
        if t.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, t.precision):
            if self.tap_train:
                logits, acts = self.net(x, taps=self.layers)
            else:
                logits = self.net(x)
        ce = F.cross_entropy(logits.float(), y)
        loss = ce
        if self.tap_train:
            labels = GroupIndex(y) if t.denominator == "same_class" else None
            with torch.set_grad_enabled(t.alpha > 0):
                terms = torch.stack(
                    [dai_loss(acts[name], self.groups, labels, t.denominator) for name in self.layers]
                )
            if t.alpha > 0:
                loss = (1 - t.alpha) * ce + (self.weights * terms).sum()
            buf[step_in_epoch, 1:] = terms.detach()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        buf[step_in_epoch, 0] = ce.detach()
        correct += (logits.detach().argmax(1) == y).sum()

    # ------------------------------------------------------------------ monitoring
    def _monitor_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed K×8-view batches (images and labels) to measure L_l without gradient."""
        nb = self.cfg.train.monitor_batches
        if nb == 0:
            return []
        k = self.cfg.train.batch_size // 8 if self.cfg.train.batch_size >= 16 else 2
        g = torch.Generator().manual_seed(self.cfg.seed + 2**20)
        idx = torch.randperm(self.data.x_train.shape[0], generator=g)[: nb * k].to(self.device)
        out = []
        for b in range(nb):
            sel = idx[b * k : (b + 1) * k]
            out.append((sel.repeat_interleave(8), torch.arange(k, device=self.device).repeat_interleave(8)))
        return out

    @torch.no_grad()
    def monitor_dai(self) -> dict[str, float]:
        """Mean L_l per layer on the fixed monitoring batches (same views every epoch)."""
        if not self._monitor:
            return {}
        t = self.cfg.train
        g = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 2**21)
        sums = torch.zeros(len(self.layers), device=self.device)
        with frozen_bn_stats(self.model):
            for idx, groups in self._monitor:
                x = images_to_float(self.data.x_train[idx])
                params = sample_params(self.scheme, x.shape[0], g, self.device)
                x = apply_aug(x, params, self.cfg.augment.interpolation)
                if t.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(self.device, t.precision):
                    _, acts = self.model(x, taps=self.layers)
                y = self.data.y_train[idx]
                sums += torch.stack([dai_loss(acts[n], groups, y, t.denominator) for n in self.layers])
        vals = (sums / len(self._monitor)).tolist()
        return dict(zip(self.layers, vals))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": checkpoint.FORMAT,
            "config": to_dict(self.cfg),
            "model_info": checkpoint.model_info(
                self.cfg.model.name,
                self.data.num_classes,
                self.data.image_shape[0],
                **model_kwargs(self.cfg.model),
            ),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "sampler": self.sampler.state_dict(),
            "aug_generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history,
            "partial": self.partial,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        info = state.get("model_info", {})
        mine = self.state_dict()["model_info"]
        if info != mine:
            raise RunError(
                f"checkpoint is for a different model/config ({info}) than this run ({mine}); "
                "resume it with its own run folder and config"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        gens = state.get("aug_generators")
        if gens is not None and len(gens) != self.world:
            raise RunError(
                f"checkpoint was written by {len(gens)} processes, this run has {self.world}; "
                "resume with the same number of processes (torchrun --nproc_per_node)"
            )
        self.gen.set_state(gens[self.rank] if gens is not None else state["aug_generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.history = list(state["history"])
        self.partial = state.get("partial")

    def save_checkpoint(self, final: bool = False) -> None:
        """Rank 0 writes; under DDP every rank must call it (the ranks' generator states are gathered)."""
        gens = [self.gen.get_state()]
        if self.distributed:
            import torch.distributed as dist

            gens = [None] * self.world
            dist.all_gather_object(gens, self.gen.get_state().cpu())
        if not self.is_main or self.run_dir is None:
            return
        ck = self.run_dir / "checkpoints"
        state = self.state_dict()
        state["aug_generators"] = gens
        runio.atomic_torch_save(state, ck / "last.pt")
        if final:
            runio.atomic_torch_save(state, ck / "final.pt")
        if self.partial is None and self.epoch in self.cfg.train.keep_epochs:
            runio.atomic_torch_save(state, ck / f"epoch-{self.epoch:04d}.pt")
        # metrics.jsonl mirrors the history stored in the checkpoint: never ahead, never behind.
        runio.write_metrics(self.run_dir / "metrics.jsonl", self.history)

    # ------------------------------------------------------------------ loop
    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(t)
            t /= self.world
        return t

    def run_epoch(self, bar: Any) -> dict[str, Any] | None:
        """One epoch (or the rest of an interrupted one). Returns its record, or None if stopped."""
        t = self.cfg.train
        n_terms = 1 + len(self.layers)
        if self.partial is not None:
            p = self.partial
            start, buf = p["step_in_epoch"], p["buf"].to(self.device)
            correct = p["correct"].to(self.device)
            elapsed = p["elapsed"]
        else:
            start, elapsed = 0, 0.0
            buf = torch.zeros(self.steps_per_epoch, n_terms, device=self.device)
            correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.net.train()
        t0 = time.perf_counter()
        checked = start
        for s in range(start, self.steps_per_epoch):
            self.train_step(s, buf, correct)
            self.step += 1
            done = s + 1
            # Host syncs only at intervals (and, alone, at once on a signal; under DDP the
            # ranks must agree on where to stop, so only at intervals).
            interval = done % t.log_every == 0 or done == self.steps_per_epoch
            if interval or (self._stop_signal is not None and not self.distributed):
                self._check_finite(buf, checked, done)
                checked = done
                if bar is not None:
                    bar.update(done - bar.n + self.epoch * self.steps_per_epoch)
                    bar.set_postfix(epoch=self.epoch + 1, ce=f"{buf[done - 1, 0].item():.3f}")
                stop = self._agree_stop()
            else:
                stop = False
            if stop and done < self.steps_per_epoch:
                self.partial = {
                    "step_in_epoch": done,
                    "buf": buf.cpu(),
                    "correct": correct.cpu(),
                    "elapsed": elapsed + time.perf_counter() - t0,
                }
                return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_time = elapsed + time.perf_counter() - t0
        self.sched.step()
        self.epoch += 1
        self.partial = None

        sums = self._reduce(buf.sum(0) / self.steps_per_epoch)
        n_samples = self.steps_per_epoch * t.batch_size
        acc = self._reduce(correct.double()).item() / n_samples
        monitor = self.monitor_dai()
        dai = dict(zip(self.layers, sums[1:].tolist())) if self.tap_train else dict(monitor)
        test_acc = test_accuracy(
            self.model, self.data, self.device, t.precision, self.cfg.eval.batch_size, t.channels_last
        )
        rec = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self._lr_of_epoch(),
            "train_ce": sums[0].item(),
            "train_acc": acc,
            "dai": dai,
            "dai_monitor": monitor,
            "test_acc": test_acc,
            "epoch_time_s": train_time,
            "samples_per_s": n_samples * self.world / train_time,
            # The 1-min load average and the core count: timings from a loaded machine are flagged.
            "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cpu_count": os.cpu_count(),
        }
        if t.alpha > 0:
            rec["train_loss"] = (1 - t.alpha) * rec["train_ce"] + float(
                (self.weights * sums[1:]).sum()
            )
        else:
            rec["train_loss"] = rec["train_ce"]
        self.history.append(rec)
        return rec

    def _agree_stop(self) -> bool:
        """Whether to stop now; under DDP, stop on every rank if any rank got a signal."""
        if not self.distributed:
            return self._stop_signal is not None
        import torch.distributed as dist

        flag = torch.tensor([0 if self._stop_signal is None else 1], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM
        return bool(flag.item())

    def _lr_of_epoch(self) -> float:
        """The learning rate used during the epoch just finished."""
        t = self.cfg.train
        return t.lr * t.lr_factor ** sum(1 for m in t.milestones if m < self.epoch)

    def _check_finite(self, buf: torch.Tensor, a: int, b: int) -> None:
        chunk = buf[a:b]
        if bool(torch.isfinite(chunk).all()):
            return
        bad = (~torch.isfinite(chunk)).nonzero()[0].tolist()
        step_in_epoch, term = a + bad[0], bad[1]
        name = "cross-entropy (CE)" if term == 0 else f"DAI loss L_l at layer {self.layers[term - 1]}"
        raise NonFiniteLoss(
            f"training stopped: the {name} became {chunk[bad[0], term].item()} at epoch "
            f"{self.epoch + 1}, step {step_in_epoch + 1} of {self.steps_per_epoch} (global step "
            f"{self.step - (b - 1 - step_in_epoch)}). The last good checkpoint is kept; try a lower "
            "learning rate (train.lr) or precision fp32 in a new run (--out, or --force); "
            "resuming with the same settings repeats the same steps."
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        if self.is_main:
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving; "
                "resume with `dainv train --resume RUN`",
                file=sys.stderr,
            )

    def fit(self) -> list[dict[str, Any]]:
        """Train to ``cfg.train.epochs``; returns the history. Saves as it goes."""
        t = self.cfg.train
        total = t.epochs * self.steps_per_epoch
        bar = None
        if self.is_main:
            k, m = self.seeds_per_step, self.views
            distinct = min(self.data.x_train.shape[0], self.steps_per_epoch * k * self.world)
            ddp = f" on each of {self.world} ranks" if self.distributed else ""
            print(
                f"{k} seeds × {m} views = {t.batch_size} samples per step{ddp}; "
                f"{self.steps_per_epoch} steps per epoch; {distinct} distinct images per epoch; "
                f"alpha={t.alpha}; {self.device} {t.precision}",
                file=sys.stderr,
            )
            if not self.quiet:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=total,
                    initial=self.epoch * self.steps_per_epoch + (self.partial or {}).get("step_in_epoch", 0),
                    unit="step",
                    dynamic_ncols=True,
                    desc=self.cfg.name,
                )
        writer = self._tensorboard()
        handlers = {}
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            while self.epoch < t.epochs:
                rec = self.run_epoch(bar)
                stopped = rec is None or self._agree_stop()
                last = self.epoch == t.epochs
                if rec is not None and (
                    self.epoch % t.checkpoint_every == 0
                    or last
                    or stopped
                    or self.epoch in t.keep_epochs
                ):
                    self.save_checkpoint(final=last)
                if rec is not None:
                    self._log_epoch(rec, bar, writer)
                if rec is None:
                    self.save_checkpoint()
                if stopped and not last:
                    raise KeyboardInterrupt
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return self.history

    def _log_epoch(self, rec: dict[str, Any], bar: Any, writer: Any) -> None:
        if not self.is_main:
            return
        dai = rec["dai"]
        layers = list(dai)
        # M = 1 with no monitoring batches has no L_l to show.
        dai_s = " ".join(f"{dai[k]:.3f}" for k in layers[:: max(1, len(layers) // 3)])
        dai_s = f"L_l[{layers[0]}..] {dai_s} " if layers else ""
        line = (
            f"epoch {rec['epoch']}/{self.cfg.train.epochs} ce {rec['train_ce']:.3f} "
            f"train_acc {rec['train_acc']:.3f} test_acc {rec['test_acc']:.4f} "
            f"{dai_s}{rec['samples_per_s']:.0f} samples/s"
        )
        if bar is not None:
            bar.write(line)
        else:
            print(line, file=sys.stderr)
        if writer is not None:
            for key in ("train_ce", "train_loss", "train_acc", "test_acc", "lr", "samples_per_s"):
                writer.add_scalar(key, rec[key], rec["epoch"])
            for k, v in dai.items():
                writer.add_scalar(f"dai/{k}", v, rec["epoch"])
            writer.flush()

    def _tensorboard(self) -> Any:
        if not self.is_main or self.run_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tb"))


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _prepare_run_dir(run_dir: Path, force: bool) -> None:
    if (run_dir / ".lock").exists():
        runio.RunLock(run_dir).check()  # a live writer: say so (a stale lock is removed)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir} is a file, not a folder; choose another --out")
    if run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()):
        if runio.is_run_dir(run_dir):
            meta = runio.read_json(run_dir / "meta.json")
            if not force:
                status = meta.get("status")
                hint = (
                    "it is finished"
                    if status == "finished"
                    else f"it is unfinished (status {status}); continue it with --resume {run_dir}"
                )
                raise RunError(
                    f"run folder {run_dir} already holds a run: {hint}. Use another --out, "
                    "or --force to start it again from scratch (its results are lost)"
                )
        elif not force:
            raise RunError(
                f"{run_dir} exists and is not empty, and is not a dainv run; choose another --out"
            )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"cannot create run folder {run_dir}: {e.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise RunError(f"run folder {run_dir} is not writable; choose a writable --out")


#: Settings a resumed run may change (by editing its config.yaml): they do not change the result.
_RESUME_MAY_DIFFER = {"name", "description", "device", "data.root", "train.epochs", "train.compile"}
_RESUME_MAY_DIFFER |= {"train.log_every", "train.checkpoint_every", "train.keep_epochs"}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _check_resumable(state: Any, cfg: RunConfig, ck: Path) -> None:
    """Refuse a checkpoint written by another config (e.g. copied from another run)."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise RunError(f"{ck} is not a dainv checkpoint (no model/config entries)")
    mine, theirs = _flat(to_dict(cfg)), _flat(to_dict(from_dict(state["config"])))
    diff = [k for k in mine if k not in _RESUME_MAY_DIFFER and mine[k] != theirs.get(k)]
    if diff:
        shown = "; ".join(f"{k} = {theirs.get(k)!r} there, {mine[k]!r} here" for k in diff[:5])
        raise RunError(
            f"checkpoint {ck} was written with a different config than its run's config.yaml "
            f"({shown}); restore the run's own config.yaml, or start a new run (--out)"
        )


def train(
    cfg: RunConfig | None,
    run_dir: Path,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
) -> Trainer:
    """Train into ``run_dir`` (or resume the run there). Returns the finished trainer."""
    run_dir = Path(run_dir)
    rank, world, _ = dist_info()
    if resume:
        if not runio.is_run_dir(run_dir):
            raise RunError(
                f"--resume {run_dir}: not a dainv run folder (it needs config.yaml and meta.json)"
            )
        from dainv.config import _read_yaml

        saved = from_dict(_read_yaml(run_dir / "config.yaml"))
        if cfg is not None and to_dict(cfg) != to_dict(saved):
            diff = [k for k, v in to_dict(cfg).items() if to_dict(saved).get(k) != v]
            raise RunError(
                f"--resume {run_dir}: the config given differs from the run's own ({diff}); "
                "resume without a preset/config/overrides"
            )
        cfg = saved
        meta = runio.read_json(run_dir / "meta.json")
        if meta.get("status") == "finished" and not force:
            raise RunError(f"{run_dir} is already finished; nothing to resume")
    elif rank == 0:
        _prepare_run_dir(run_dir, force)

    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dev = resolve_device(cfg.device)
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        dist.barrier()

    lock = runio.RunLock(run_dir)
    if rank == 0:
        lock.acquire()
        runio.remove_stale_temps(run_dir)
    try:
        trainer = Trainer(cfg, run_dir, data=data, quiet=quiet)
        ck = run_dir / "checkpoints" / "last.pt"
        if resume and ck.exists():
            # On the CPU: RNG and generator states must stay CPU byte tensors whatever the device.
            state = checkpoint.load_checkpoint(ck)
            _check_resumable(state, trainer.cfg, ck)
            trainer.load_state_dict(state)
            if trainer.epoch >= trainer.cfg.train.epochs:  # killed between last.pt and final.pt
                trainer.save_checkpoint(final=True)
        meta: dict[str, Any]
        if rank == 0:
            if resume:
                meta = runio.read_json(run_dir / "meta.json")
                meta["resumed"] = meta.get("resumed", []) + [runio.now()]
            else:
                meta = {"started": runio.now(), "command": sys.argv}
                # The trainer's config: ``auto`` settings resolved to what actually runs.
                runio.atomic_write_text(run_dir / "config.yaml", dump_yaml(trainer.cfg))
                runio.write_metrics(run_dir / "metrics.jsonl", [])
            meta.update(
                status="running",
                finished=None,
                world_size=world,
                **runio.environment(trainer.device),
            )
            runio.write_json(run_dir / "meta.json", meta)
        t0 = time.perf_counter()
        status = "failed"
        try:
            trainer.fit()
            status = "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if rank == 0:
                meta["status"] = status
                meta["wall_time_s"] = meta.get("wall_time_s", 0.0) + time.perf_counter() - t0
                meta["train_time_s"] = sum(r["epoch_time_s"] for r in trainer.history)
                if status == "finished":
                    meta["finished"] = runio.now()
                with contextlib.suppress(RunError):
                    runio.write_json(run_dir / "meta.json", meta)
        return trainer
    finally:
        lock.release()
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

