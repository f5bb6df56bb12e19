"""``dainv train``: the config from the command line, the plan (what runs, where, a rough time
class) and the training run itself.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from dainv.cli.common import ARM_HELP, T0, _print_summary
from dainv.errors import DainvError

# Rough throughput of a training step, in FLOP/s: measured on this project's 2-core CPU
# (quick and cpu-short presets: ~70 GFLOP/s, fp32) and conservative for one recent GPU.
_CPU_FLOPS_PER_CORE = 35e9
_GPU_FLOPS = 30e12
_TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000}
_CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200}


def _forward_flops(cfg: Any) -> float | None:
    """FLOPs of one forward pass of one image, counted on the meta device (no memory, no compute)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from dainv.config import model_kwargs
        from dainv.models import build_model

        kind = cfg.data.dataset.partition(":")[0]
        size = cfg.data.image_size or (64 if kind == "tinyimagenet" else 32)
        with torch.device("meta"):
            net = build_model(cfg.model.name, _CLASSES.get(kind, 10), 3, **model_kwargs(cfg.model))
            x = torch.empty(1, 3, size, size)
        with FlopCounterMode(display=False) as fc:
            net(x)
        return float(fc.get_total_flops())
    except Exception:  # an estimate only: never stop a run for it
        return None


def _eta_class(seconds: float) -> str:
    if seconds < 120:
        return "a minute or two"
    if seconds < 3600:
        return f"about {math.ceil(seconds / 60 / 5) * 5:.0f} minutes"
    if seconds < 36 * 3600:
        return f"about {seconds / 3600:.0f} hours" if seconds >= 1.5 * 3600 else "about an hour"
    return f"days (about {seconds / 3600:,.0f} hours)"


def _plan(cfg: Any, arm: str, run_dir: Path, preset: str | None) -> str:
    """One paragraph: what is about to run, where, and a rough time class."""
    import torch

    from dainv.runtime import resolve_device

    t = cfg.train
    dev = resolve_device(cfg.device)
    kind = cfg.data.dataset.partition(":")[0]
    n = cfg.data.n_train or _TRAIN_IMAGES.get(kind)
    what = f"arm {arm}" + (f" of preset {preset}" if preset else " (no preset)")
    width = f" width {cfg.model.width:g}" if cfg.model.width != 1.0 else ""
    steps = f" x {math.ceil(n / t.batch_size):,} steps" if n else " of steps"
    lines = [
        f"dainv: training {what}: {cfg.model.name}{width} on {cfg.data.dataset}, {t.epochs} epochs"
        f"{steps} of {t.batch_size} samples ({t.batch_size // t.views} seeds x {t.views} views), "
        f"alpha {t.alpha:g}, {t.precision}, on {dev.type}; run folder {run_dir}",
    ]
    flops = _forward_flops(cfg)
    if n and flops:
        rate = _GPU_FLOPS if dev.type == "cuda" else _CPU_FLOPS_PER_CORE * torch.get_num_threads()
        seconds = 3 * flops * n * t.epochs / rate  # forward + backward ≈ 3 forwards
        where = (
            "on this GPU"
            if dev.type == "cuda"
            else f"on this CPU ({torch.get_num_threads()} threads)"
        )
        lines.append(f"dainv: expected time {_eta_class(seconds)} {where} (a rough estimate)")
        if dev.type == "cpu" and seconds > 3600:
            lines.append(
                "dainv: this is a GPU job on a CPU; for a run of minutes use --preset quick "
                "(Ctrl-C stops it; --resume continues)"
            )
    else:
        lines.append("dainv: expected time unknown for this model or data set")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from dainv.runtime import dist_info
    from dainv.train import train

    ov = _overrides(args)
    main_rank = dist_info()[0] == 0
    extra: dict[str, Any] = {}
    if args.resume:
        extra = _resume_extra(args, ov, train)
        cfg = None
        run_dir = args.resume
    else:
        if args.accept_changed_data:
            raise DainvError("--accept-changed-data goes with --resume RUN (a new run records its data)")
        cfg, run_dir = _new_run(args, ov, main_rank)
    if args.time_limit:
        extra["deadline"] = T0 + args.time_limit
    if args.download:
        extra["download"] = True
    trainer = train(
        cfg, run_dir, resume=bool(args.resume), force=args.force, quiet=args.quiet, **extra
    )
    if trainer.is_main:
        last = trainer.history[-1] if trainer.history else {}
        acc = last.get("test_acc")
        shown = f"{acc:.4f}" if isinstance(acc, (int, float)) else "not measured"
        print(f"finished {run_dir}: test accuracy {shown}")
        if args.evaluate:
            from dainv.evaluate import evaluate

            _print_summary(evaluate(run_dir, data=trainer.data, quiet=args.quiet))
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides, then the shortcut flags as overrides."""
    ov = list(args.overrides)
    for flag, key in (
        ("epochs", "train.epochs"),
        ("seed", "seed"),
        ("precision", "train.precision"),
    ):
        if getattr(args, flag) is not None:
            ov.append(f"{key}={getattr(args, flag)}")
    if args.compile:
        ov.append("train.compile=true")
    if args.data_root:
        ov.append(f"data.root={args.data_root}")
    if args.device:
        ov.append(f"device={args.device}")
    return ov


def _resume_extra(args: argparse.Namespace, ov: list[str], train: Any) -> dict[str, Any]:
    """Check ``--resume``'s options; the trainer's extra keywords (``extend_epochs``)."""
    from dainv.config import RunConfig, apply_overrides

    extra: dict[str, Any] = {}
    if args.preset or args.config or args.arm or args.out:
        raise DainvError(
            "--resume continues a run with its own config; drop --preset/--config/--arm/--out"
        )
    others = [o for o in ov if o.split("=", 1)[0].strip() != "train.epochs"]
    if others:
        raise DainvError(
            f"--resume takes no overrides but train.epochs (got {others}); the run's config.yaml "
            "is used. To extend a run: dainv train --resume RUN --epochs N"
        )
    if len(ov) > len(others):  # extend the run to N epochs
        n = apply_overrides(RunConfig(), [o for o in ov if o not in others]).train.epochs
        extra["extend_epochs"] = n
    if args.accept_changed_data:
        extra["accept_changed_data"] = True
    return extra


def _new_run(args: argparse.Namespace, ov: list[str], main_rank: bool) -> tuple[Any, Path]:
    """The config of a new run and its folder; the plan is printed on the main rank."""
    from dainv.config import load_config

    name_hint = "-".join(x for x in (args.preset, args.arm) if x) or "run"
    cfg = load_config(args.preset, args.config, [f"name={name_hint}", *ov], arm=args.arm)
    if not args.arm:
        raise DainvError(
            f"choose an arm with --arm: {ARM_HELP} (docs/method.md §5). For a first run: "
            "dainv train --preset quick --arm dai (minutes on a CPU); without a preset the "
            "settings are the paper's 350 epochs, a GPU job"
        )
    run_dir = args.out or Path("runs") / cfg.name
    if main_rank:
        print(_plan(cfg, args.arm, run_dir, args.preset), file=sys.stderr, flush=True)
    return cfg, run_dir
