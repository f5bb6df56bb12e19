"""The GPU benchmark (``make bench-gpu`` = ``benchmarks/run.py --device cuda --only gpu,ops``).

Per arm (baseline, DAI, control) and per step mode (eager, ``train.compile=true``,
``train.cuda_graphs=true``) × numeric mode (fp32 with ``train.tf32=false``, TF32, bf16):
training samples/s through a real Trainer at the paper's size (All-CNN-C width 1, B = 128),
the DAI overhead against the baseline, and the projected wall time of ``--preset paper``
(350 epochs × 391 steps) for the three arms, with the card's name. Refuses without CUDA.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

import torch
from bench_common import log
from bench_ops import ARMS, trainer_for

from dainv.data import random_dataset

__all__ = ["bench_gpu", "NUMERICS", "MODES"]

#: numeric mode → (train.precision, train.tf32)
NUMERICS = {"fp32": ("fp32", False), "tf32": ("fp32", True), "bf16": ("bf16", True)}
MODES = {"eager": (False, False), "compiled": (True, False), "cuda_graphs": (False, True),
         "compiled_graphs": (True, True)}  # fmt: skip
PAPER_STEPS = 350 * 391  # --preset paper: 350 epochs of ceil(50,000 / 128) steps


def _samples_per_s(tr: Any, steps: int, rounds: int) -> tuple[float, float]:
    """(median samples/s over ``rounds`` timings of ``steps`` steps, first-step seconds)."""
    dev = tr.device
    buf = tr.step_buffer(steps)
    correct = torch.zeros((), dtype=torch.long, device=dev)
    tr.net.train()
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for s in range(5):  # warm-up: compile / cudnn autotune / 3 eager steps, then the graph capture
        tr.train_step(s, buf, correct)
    torch.cuda.synchronize(dev)
    first = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for s in range(steps):
            tr.train_step(s, buf, correct)
        torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    if not bool(torch.isfinite(buf).all()):
        raise RuntimeError("non-finite loss in a GPU benchmark step")
    times.sort()
    return tr.batch_per_rank * steps / times[len(times) // 2], first


def _pick(arg: str | None, choices: Any, what: str) -> list[str]:
    """``--gpu-numerics`` / ``--gpu-modes`` / ``--gpu-arms``: a comma-separated subset, in table order."""
    names = list(choices) if arg is None else [s.strip() for s in arg.split(",") if s.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
        raise ValueError(f"{what}: {unknown or names} is not a subset of {', '.join(choices)}")
    return [n for n in choices if n in names]


def bench_gpu(ctx: dict[str, Any], rec: Any) -> None:
    dev = ctx["device"]
    if dev.type != "cuda":
        raise RuntimeError("the gpu benchmark needs --device cuda (a CUDA GPU)")
    a = ctx["args"]
    steps, rounds = (5, 2) if a.smoke else (50, 5)
    data = random_dataset(8192, 16).to(dev)
    card = torch.cuda.get_device_name(dev)
    arms = _pick(a.gpu_arms, ARMS, "--gpu-arms")
    modes = _pick(a.gpu_modes, MODES, "--gpu-modes")
    for numeric in _pick(a.gpu_numerics, NUMERICS, "--gpu-numerics"):
        precision, tf32 = NUMERICS[numeric]
        for mode in modes:
            compiled, graphs = MODES[mode]
            sps: dict[str, float] = {}
            first: dict[str, float] = {}
            for arm in arms:
                try:
                    log(f"gpu: {numeric} {mode} {arm} ...")
                    tr = trainer_for(arm, data, a.width, 128, precision, device=str(dev), compile=compiled,
                                     cuda_graphs=graphs, tf32=tf32)  # fmt: skip
                    sps[arm], first[arm] = _samples_per_s(tr, steps, rounds)
                except Exception as e:  # noqa: BLE001 - record and go on
                    traceback.print_exc()
                    rec("gpu", card=card, numeric=numeric, mode=mode, arm=arm, error=f"{type(e).__name__}: {e}")
                finally:
                    tr = None
                    torch.cuda.empty_cache()
            if len(sps) < len(arms):
                continue
            hours = {arm: PAPER_STEPS * 128 / v / 3600 for arm, v in sps.items()}
            rec(
                "gpu",
                card=card,
                numeric=numeric,
                mode=mode,
                width=a.width,
                batch_size=128,
                samples_per_s=sps,
                first_steps_s=first,
                dai_overhead=sps["baseline"] / sps["dai"] - 1 if {"baseline", "dai"} <= sps.keys() else None,
                paper_hours_per_arm=hours,
                paper_hours_three_arms=sum(hours.values()),
                note="projected training time only (test passes and checkpoints excluded)",
            )
