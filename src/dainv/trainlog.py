"""What a training run shows while it runs: the split line, the progress bar, the epoch line
and TensorBoard scalars. Host-side only: the bar counts steps on the host (no device sync);
the cross-entropy it shows is read only at the logging interval (``train.log_every``)."""

from __future__ import annotations

import sys
from typing import Any

import torch

__all__ = ["EpochLog", "epoch_line", "layer_values"]


def layer_values(values: dict[str, float], digits: int = 3) -> str:
    """Every layer's value in one compact field: ``conv1..conv9 0.571 0.602 … 0.733`` (the
    first and last layer name, then the values in layer order); one layer: ``conv1 0.571``."""
    names, vals = list(values), " ".join(f"{v:.{digits}f}" for v in values.values())
    if not names:
        return ""
    return f"{names[0]} {vals}" if len(names) == 1 else f"{names[0]}..{names[-1]} {vals}"


def epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """``epoch 3/10 ce 1.234 train_acc 0.550 test_acc 0.5432 L_l conv1..conv9 0.571 … 0.733 …``.

    ``L_l`` shows every tapped layer, in layer order; ``test_acc -`` on an epoch without a test pass.
    """
    dai = layer_values(rec["dai"])
    test = "-" if rec.get("test_acc") is None else f"{rec['test_acc']:.4f}"
    return (
        f"epoch {rec['epoch']}/{epochs} ce {rec['train_ce']:.3f} "
        f"train_acc {rec['train_acc']:.3f} test_acc {test} "
        f"{f'L_l {dai} ' if dai else ''}{rec['samples_per_s']:.0f} samples/s"
    )


class EpochLog:
    """Progress bar, epoch lines and TensorBoard of the main process (others stay silent)."""

    def __init__(self, trainer: Any, quiet: bool) -> None:
        self.tr = trainer
        self.bar = None
        self.writer = None
        if not trainer.is_main:
            return
        self._split_line()
        if not quiet:
            from tqdm.auto import tqdm

            done = trainer.epoch * trainer.steps_per_epoch + (trainer.partial or {}).get("step_in_epoch", 0)
            self.bar = tqdm(
                total=trainer.cfg.train.epochs * trainer.steps_per_epoch,
                initial=done,
                unit="step",
                dynamic_ncols=True,
                desc=trainer.cfg.name,
                mininterval=1.0,
            )
        self.writer = self._tensorboard()

    def _split_line(self) -> None:
        tr, t = self.tr, self.tr.cfg.train
        k, m = tr.seeds_per_step, tr.views
        distinct = min(tr.data.x_train.shape[0], tr.steps_per_epoch * k * tr.world)
        per_step = f"{k} seeds × {m} views = {k * m} samples per step"
        if tr.world > 1:
            per_step += f" on each of {tr.world} ranks (global batch {t.batch_size})"
        print(
            f"{per_step}; {tr.steps_per_epoch} steps per epoch; {distinct} distinct images per "
            f"epoch; alpha={t.alpha}; {tr.device} {t.precision}",
            file=sys.stderr,
        )

    def _tensorboard(self) -> Any:
        if self.tr.run_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.tr.run_dir / "tb"))

    def step(self) -> None:
        """One optimizer step done (host-side count: no device sync)."""
        if self.bar is not None:
            self.bar.update(1)

    def interval(self, ce: torch.Tensor) -> None:
        """At the logging interval (a host sync happens there anyway): show the current CE."""
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
