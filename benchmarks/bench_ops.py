"""Operator counts of one training step (issue 10: a launch-bound DAI step).

Counted with a ``TorchDispatchMode`` on the CPU, eagerly, through a real
:class:`dainv.train.Trainer` (``train_step``: augmentation, forward with taps, CE + DAI,
backward, SGD). ``ops`` counts every ATen operator dispatched; ``kernels`` leaves out the
view/metadata operators that launch no kernel on a GPU (views, reshapes, detach, …), which
is what costs ~5–7 µs each on a GPU. ``host`` counts host syncs (``_local_scalar_dense``)
and tensors built from Python data (``lift_fresh``): both must be 0 in a step.
"""

from __future__ import annotations

import collections
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dainv.config import load_config
from dainv.data import Dataset
from dainv.train import Trainer

__all__ = ["NO_KERNEL", "OpCounter", "count_step_ops", "trainer_for"]

#: Operators that only make views or change metadata: no kernel launch on a GPU.
NO_KERNEL = {
    "view", "_unsafe_view", "as_strided", "t", "transpose", "expand", "permute", "unsqueeze",
    "squeeze", "select", "slice", "detach", "alias", "unbind", "split", "split_with_sizes",
    "chunk", "reshape", "_reshape_alias", "view_as", "expand_as", "numpy_T", "diagonal",
    "lift_fresh", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "_local_scalar_dense", "is_same_size", "set_", "resolve_conj", "resolve_neg",
}  # fmt: skip
#: Operators that wait for the device (a value read back, or an output size that depends on the
#: data) or build a tensor from Python data (``lift_fresh``: on a GPU a blocking host→device
#: copy). None may run inside a training step.
HOST = {
    "_local_scalar_dense", "item", "is_nonzero", "equal", "nonzero", "bincount", "_unique2",
    "unique_dim", "unique_consecutive", "masked_select", "lift_fresh", "lift_fresh_copy",
}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while active, by name (``aten.mm`` …)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def host_ops(self) -> dict[str, int]:
        """The :data:`HOST` operators dispatched, by name (empty in a sync-free step)."""
        return {k: v for k, v in self.ops.items() if k in HOST}

    def summary(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        no_kernel = sum(v for k, v in self.ops.items() if k in NO_KERNEL)
        return {
            "ops": total,
            "kernels": total - no_kernel,
            "host": sum(self.host_ops.values()),
            "top": dict(self.ops.most_common(8)),
        }


def trainer_for(
    arm: str, data: Dataset, width: float = 1.0, batch: int = 128, precision: str = "fp32", *,
    device: str = "cpu", compile: bool = False, cuda_graphs: bool = False, tf32: bool = True,
    extra: tuple[str, ...] = (),
) -> Trainer:  # fmt: skip
    """A trainer of ``arm`` (baseline, dai, control) on ``data``, no monitoring batches;
    ``extra``: more ``key=value`` settings."""
    cfg = load_config(
        None,
        overrides=[
            f"name=bench-{arm}",
            f"device={device}",
            f"model.width={width}",
            f"train.batch_size={batch}",
            f"train.precision={precision}",
            f"train.compile={'true' if compile else 'false'}",
            f"train.cuda_graphs={'true' if cuda_graphs else 'false'}",
            f"train.tf32={'true' if tf32 else 'false'}",
            "train.monitor_batches=0",
            *extra,
        ],
        arm=arm,
    )
    return Trainer(cfg, None, data=data, quiet=True)


def count_step_ops(tr: Trainer, warmup: int = 1, fused: bool = True) -> dict[str, Any]:
    """Operators of one eager ``train_step`` of ``tr`` (after ``warmup`` steps). ``fused``:
    count the DAI loss's GPU path (all layers in one pass) even on a CPU, where the trainer
    would otherwise take the per-layer path (docs/performance.md)."""
    tr.crit.fused = fused
    buf = tr.step_buffer(warmup + 1)
    correct = torch.zeros((), dtype=torch.long, device=tr.device)
    tr.net.train()
    for s in range(warmup):
        tr.train_step(s, buf, correct)
    with OpCounter() as c:
        tr.train_step(warmup, buf, correct)
    return c.summary()


ARMS = ("baseline", "dai", "control")


def bench_ops(ctx: dict[str, Any], rec: Any) -> None:
    """``ops`` records: operators per eager training step for each arm, and DAI / baseline."""
    from dainv.data import random_dataset

    a, dev = ctx["args"], ctx["device"]
    width = a.width
    batch = 32 if a.smoke else 128
    data = random_dataset(4 * batch, 16)
    counts = {}
    for arm in ARMS:
        tr = trainer_for(arm, data, width, batch, "fp32", device=str(dev))
        counts[arm] = count_step_ops(tr)
        del tr
    base = counts["baseline"]
    rec(
        "ops",
        model="allcnnc",
        width=width,
        batch_size=batch,
        precision="fp32",
        mode="eager",
        counts=counts,
        dai_over_baseline_ops=counts["dai"]["ops"] / base["ops"],
        dai_over_baseline_kernels=counts["dai"]["kernels"] / base["kernels"],
        control_over_baseline_kernels=counts["control"]["kernels"] / base["kernels"],
        target_max_ratio=1.5,
        meets_target=counts["dai"]["kernels"] <= 1.5 * base["kernels"],
    )
