"""Device, precision and autocast: one copy each, shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import os
from typing import Literal

import torch

from dainv.errors import ConfigError

#: ``train.precision`` (and ``dainv train --precision``); ``auto``: :func:`resolve_precision`.
Precision = Literal["fp32", "bf16", "auto"]

__all__ = ["Precision", "resolve_device", "resolve_precision", "native_bf16", "autocast", "full_fp32", "dist_info", "configure_backends"]


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"invalid device {name!r}; use auto, cpu, cuda or cuda:N (N a GPU index)") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is available; use device=cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s) (cuda:0…)")
    return dev


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX / AVX512-BF16); oneDNN emulates it otherwise."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """``auto`` → bf16 where native (CUDA, some CPUs), else fp32 (emulated bf16 is 2–3× slower)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision == "bf16"``, a no-op otherwise (fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def full_fp32():
    """Full fp32, not TF32, inside, whatever ``train.tf32`` allows the training step: for the
    augmentation's grid (TF32 moves sample points by ~1e-3) and evaluation. Host flags only."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def configure_backends(device: torch.device, tf32: bool) -> dict[str, object]:
    """On CUDA: ``cudnn.benchmark`` (fixed shapes) and TF32 iff ``tf32``; the settings, for ``meta.json``."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
    return {
        "tf32_requested": bool(tf32),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        # TF32 (where allowed) is for the training step's network only (runtime.full_fp32)
        "augmentation_tf32": False,
        "evaluation_tf32": False,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
