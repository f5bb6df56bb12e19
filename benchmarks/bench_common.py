"""Shared benchmark utilities: logging, interleaved timing, the JSON-lines recorder."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dainv import runio
from dainv.runtime import native_bf16


# --------------------------------------------------------------------------------- utilities
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def calibrate(fn: Callable[[], Any], dev: torch.device, target_s: float) -> int:
    """Calls per timing so that one timing lasts about ``target_s``."""
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    once = max(time.perf_counter() - t0, 1e-6)
    return max(1, math.ceil(target_s / once))


def interleaved(
    fns: dict[str, Callable[[], Any]],
    dev: torch.device,
    rounds: int,
    inner: dict[str, int] | int = 1,
    *,
    warmup: int = 1,
    label: str = "",
    progress: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each fn, one timing per round, the order alternating between rounds."""
    names = list(fns)
    inner = inner if isinstance(inner, dict) else dict.fromkeys(names, inner)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(dev)
    out: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(inner[name]):
                fns[name]()
            sync(dev)
            out[name].append((time.perf_counter() - t0) / inner[name])
        if progress:
            times = ", ".join(f"{k} {out[k][-1]:.3g} s" for k in names)
            log(f"{label} round {r + 1}/{rounds}: {times}")
    return out


def spread(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "max": max(xs)}


class Recorder:
    """Prints each record as one JSON line and appends it to the results file."""

    def __init__(self, out_dir: Path, env: dict[str, Any], smoke: bool) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        host = re.sub(r"[^A-Za-z0-9._-]+", "_", env.get("host") or "host")
        date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        self.path = out_dir / f"{date}-{host}.jsonl"
        self.common = {
            "machine": {
                "cpu": env.get("cpu"),
                "threads": env.get("cpu_threads"),
                "platform": env.get("platform"),
                "host": env.get("host"),
                "bf16_native": native_bf16(),
            },
            "device": env.get("device"),
            **({"gpu": env["gpu"]} if "gpu" in env else {}),
            "torch": env.get("torch"),
            "dainv": env.get("dainv"),
            "python": env.get("python"),
            "git_commit": env.get("git_commit"),
            "smoke": smoke,
        }
        self.records: list[dict[str, Any]] = []

    def __call__(self, bench: str, **fields: Any) -> dict[str, Any]:
        rec = {"bench": bench, **fields, **self.common, "time": runio.now()}
        with contextlib.suppress(OSError, AttributeError):
            rec["load_avg_1m"] = os.getloadavg()[0]  # how busy the machine was (noise)
        line = json.dumps(rec)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        self.records.append(rec)
        return rec


class StepFn:
    """One ``Trainer.train_step`` per call, with the buffers ``Trainer.run_epoch`` passes; like
    ``run_epoch``, no host sync per step (:meth:`check` looks at the losses afterwards)."""

    def __init__(self, tr: Any, n: int = 64) -> None:
        self.tr, self.n, self.i = tr, n, 0
        self.buf = tr.step_buffer(n)
        self.correct = torch.zeros((), dtype=torch.long, device=tr.device)
        tr.net.train()

    def __call__(self) -> None:
        self.tr.train_step(self.i % self.n, self.buf, self.correct)
        self.i += 1

    def check(self) -> None:
        if not bool(torch.isfinite(self.buf).all()):
            raise RuntimeError(f"non-finite loss in a benchmark step of {self.tr.cfg.name}")


def step_fn(tr: Any) -> StepFn:
    return StepFn(tr)
