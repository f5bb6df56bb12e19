"""The ``dainv`` commands' handlers: each checks what only the command line can get wrong, calls
the library, prints the outcome. Library modules are imported inside them: 0.6 s (measured)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from dainv import config
from dainv.cli.parser import ARM_HELP
from dainv.data.registry import load_dataset
from dainv.errors import ConfigError, DainvError
from dainv.runtime import dist_info, resolve_device

#: When the command started (imported with the CLI): ``--time-limit`` counts from here.
T0 = time.monotonic()

# Rough throughput of a training step, in FLOP/s: measured on this project's 2-core CPU
# (quick and cpu-short presets: ~70 GFLOP/s, fp32) and conservative for one recent GPU.
_CPU_FLOPS_PER_CORE = 35e9
_GPU_FLOPS = 30e12
_TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "tinyimagenet": 100_000}
_CLASSES = {"cifar10": 10, "cifar100": 100, "tinyimagenet": 200}


def _given(**kw: Any) -> dict[str, Any]:
    """The keywords whose option was given: the library's defaults stand for the others."""
    return {k: v for k, v in kw.items() if v}


def _print_summary(s: dict[str, Any]) -> None:
    """Accuracy and medians, then the layer × transformation table when there is one."""
    from dainv.measure import format_summary
    print(format_summary(s))
    inv, pt = s["invariance"], s.get("per_transform")
    if not pt:
        return
    layers = list(inv["layers"])
    cols = {"all": inv["median"]}
    for t, stats in pt.items():  # {layer: median}, or statistics with a "median"
        if isinstance(stats, dict) and isinstance(stats.get("median"), dict):
            stats = stats["median"]
        cols[t] = {k: stats.get(k, float("nan")) for k in layers} if isinstance(stats, dict) else {}
    w = max(7, *(len(c) for c in cols)) + 1
    lw = max(5, *(len(x) for x in layers))
    print("median invariance per layer and transformation (docs/method.md §6):")
    print("  " + f"{'layer':<{lw}}" + "".join(f"{c:>{w}}" for c in cols))
    for layer in layers:
        cells = [cols[c].get(layer) for c in cols]
        row = "".join(f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'undef':>{w}}" for v in cells)
        print("  " + f"{layer:<{lw}}" + row)


def _forward_flops(cfg: Any) -> float | None:
    """FLOPs of one forward pass of one image, counted on the meta device (no memory, no compute)."""
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from dainv.models import build_model
        kind = cfg.data.dataset.partition(":")[0]
        size = cfg.data.image_size or (64 if kind == "tinyimagenet" else 32)
        with torch.device("meta"):
            net = build_model(cfg.model.name, _CLASSES.get(kind, 10), 3, **config.model_kwargs(cfg.model))
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
    t = cfg.train
    dev = resolve_device(cfg.device)
    n = cfg.data.n_train or _TRAIN_IMAGES.get(cfg.data.dataset.partition(":")[0])
    what = f"arm {arm}" + (f" of preset {preset}" if preset else " (no preset)")
    width = f" width {cfg.model.width:g}" if cfg.model.width != 1.0 else ""
    steps = f" x {math.ceil(n / t.batch_size):,} steps" if n else " of steps"
    lines = [
        f"dainv: training {what}: {cfg.model.name}{width} on {cfg.data.dataset}, {t.epochs} epochs"
        f"{steps} of {t.batch_size} samples ({t.batch_size // t.views} seeds x {t.views} views), "
        f"alpha {t.alpha:g}, {t.precision}, on {dev.type}; run folder {run_dir}",
    ]
    flops = _forward_flops(cfg)
    if not (n and flops):
        return "\n".join([*lines, "dainv: expected time unknown for this model or data set"])
    gpu = dev.type == "cuda"
    rate = _GPU_FLOPS if gpu else _CPU_FLOPS_PER_CORE * torch.get_num_threads()
    seconds = 3 * flops * n * t.epochs / rate  # forward + backward ≈ 3 forwards
    where = "on this GPU" if gpu else f"on this CPU ({torch.get_num_threads()} threads)"
    lines.append(f"dainv: expected time {_eta_class(seconds)} {where} (a rough estimate)")
    if not gpu and seconds > 3600:
        lines.append(
            "dainv: this is a GPU job on a CPU; for a run of minutes use --preset quick "
            "(Ctrl-C stops it; --resume continues)"
        )
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from dainv.train import train
    shortcuts = {
        "train.epochs": args.epochs, "seed": args.seed, "train.precision": args.precision,
        "train.compile": "true" if args.compile else None, "data.root": args.data_root or None,
        "device": args.device or None,
    }  # fmt: skip
    ov = [*args.overrides, *(f"{k}={v}" for k, v in shortcuts.items() if v is not None)]
    if args.resume:  # the run's own config; only train.epochs may be raised (extend_epochs)
        if args.preset or args.config or args.arm or args.out:
            raise DainvError(
                "--resume continues a run with its own config; drop --preset/--config/--arm/--out"
            )
        epochs = [o for o in ov if o.split("=", 1)[0].strip() == "train.epochs"]
        if len(epochs) < len(ov):
            raise DainvError(
                f"--resume takes no overrides but train.epochs (got {[o for o in ov if o not in epochs]}); "
                "the run's config.yaml is used. To extend a run: dainv train --resume RUN --epochs N"
            )
        cfg, run_dir, extra = None, args.resume, _given(accept_changed_data=args.accept_changed_data)
        if epochs:
            extra["extend_epochs"] = config.apply_overrides(config.RunConfig(), epochs).train.epochs
    else:
        if args.accept_changed_data:
            raise DainvError("--accept-changed-data goes with --resume RUN (a new run records its data)")
        name_hint = "-".join(x for x in (args.preset, args.arm) if x) or "run"
        cfg = config.load_config(args.preset, args.config, [f"name={name_hint}", *ov], arm=args.arm)
        if not args.arm:
            raise DainvError(
                f"choose an arm with --arm: {ARM_HELP} (docs/method.md §5). For a first run: "
                "dainv train --preset quick --arm dai (minutes on a CPU); without a preset the "
                "settings are the paper's 350 epochs, a GPU job"
            )
        run_dir, extra = args.out or Path("runs") / cfg.name, {}
        if dist_info()[0] == 0:
            print(_plan(cfg, args.arm, run_dir, args.preset), file=sys.stderr, flush=True)
    extra.update(_given(deadline=args.time_limit and T0 + args.time_limit, download=args.download))
    trainer = train(cfg, run_dir, resume=bool(args.resume), force=args.force, quiet=args.quiet, **extra)
    if trainer.is_main:
        acc = (trainer.history[-1] if trainer.history else {}).get("test_acc")
        shown = f"{acc:.4f}" if isinstance(acc, (int, float)) else "not measured"
        print(f"finished {run_dir}: test accuracy {shown}")
        if args.evaluate:
            from dainv.evaluate import evaluate
            _print_summary(evaluate(run_dir, data=trainer.data, quiet=args.quiet))
    return 0


def _checked_layers(args: argparse.Namespace) -> list[str] | None:
    """The ``--layers`` list, after refusing a bad device, --n-test, --seed or --image-size."""
    if args.device:
        resolve_device(args.device)
    if args.n_test is not None and args.n_test < 2:
        raise DainvError(
            f"--n-test {args.n_test}: give at least 2 test images (Eq. 2's denominator is the mean "
            "distance to the other test images, docs/method.md §2)"
        )
    if args.seed is not None and not 0 <= args.seed <= config.MAX_SEED:
        shown = args.seed if abs(args.seed) < 10**12 else f"an integer of {len(str(abs(args.seed)))} digits"
        raise ConfigError(f"--seed {shown}: give a seed from 0 to {config.MAX_SEED}")
    if args.image_size is not None and not 8 <= args.image_size <= 4096:
        raise ConfigError(f"--image-size {args.image_size}: give 8 to 4096 pixels per side")
    if args.layers is None:
        return None
    layers = config.layer_list(args.layers)
    if layers is None or layers == "auto":
        what = "is empty" if not args.layers.strip(" ,[]") else f"{args.layers!r} is not a list of names"
        raise ConfigError(
            f"--layers {what}; give layer names, comma-separated (e.g. --layers conv7,conv8, or "
            "[conv7,conv8]); leave it out for all the model's layers"
        )
    return layers


def _normalize(text: str | None) -> tuple[list[float], list[float]] | None:
    """``--normalize MEAN/STD`` (comma-separated per-channel values) as ``(mean, std)``."""
    if text is None:
        return None
    mean, sep, std = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
    except ValueError:
        raise ConfigError(
            f"--normalize {text!r}: give MEAN/STD with per-channel values, e.g. --normalize "
            "0.49,0.48,0.45/0.25,0.24,0.26 (or 0.5/0.25 for all channels), as the network was trained"
        ) from None


def _model_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--model-kwargs JSON``, read as ``--set model.kwargs=...`` is."""
    if text is None:
        return None
    where = f"--model-kwargs {text}"
    how = "give a JSON object of constructor arguments, e.g. --model-kwargs '{\"width\": 0.5}'"
    try:
        val = config.parse_yaml(text, where)
    except ConfigError as e:
        raise ConfigError(f"{' '.join(str(e).split())[:160]}; {how}") from None
    if not isinstance(val, dict):
        raise ConfigError(f"{where}: {how}")
    return config.from_dict({"model": {"kwargs": val}}, source=where).model.kwargs


def _evaluate(args: argparse.Namespace) -> int:
    from dainv import evaluate as ev
    common = dict(
        layers=_checked_layers(args), per_transform=args.per_transform or None, n_test=args.n_test,
        seed=args.seed, quiet=args.quiet, normalize=_normalize(args.normalize), image_size=args.image_size,
        skip_bad=args.skip_bad, device=args.device, data_root=args.data_root, download=args.download or None,
    )  # fmt: skip
    if args.weights is not None or args.model is not None:
        given = {"--model": args.model, "--weights": args.weights, "--data": args.dataset}
        if missing := [f for f, v in given.items() if not v]:
            raise DainvError(
                f"evaluating a network trained elsewhere needs --model, --weights and --data; missing "
                f"{', '.join(missing)} (e.g. --model allcnnc --weights net.pt --data cifar10)"
            )
        if args.source is not None:
            raise DainvError(
                f"give either a run folder or checkpoint ({args.source}) or --model/--weights, not both"
            )
        s = ev.evaluate_weights(model=args.model, weights=args.weights, data=args.dataset, out=args.out,
                                model_kwargs=_model_kwargs(args.model_kwargs), **common)  # fmt: skip
    else:
        if args.source is None:
            raise DainvError(
                "give a run folder or checkpoint to evaluate (dainv evaluate runs/dai), or a network "
                "trained elsewhere with --model NAME --weights FILE.pt --data DATASET"
            )
        if args.model_kwargs is not None:
            raise ConfigError(
                "--model-kwargs goes with --model/--weights; a checkpoint names its own constructor "
                "arguments (model_info)"
            )
        s = ev.evaluate(args.source, out_dir=args.out, dataset=args.dataset, checkpoint=args.checkpoint, **common)
    _print_summary(s)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from dainv.reproduce import reproduce
    if not args.preset:
        raise DainvError("reproduce needs --preset (see `dainv presets`), e.g. --preset quick")
    if args.config:
        raise DainvError("reproduce takes a --preset and --set overrides, not --config files")
    if args.parallel is not None and args.parallel < 1:
        raise DainvError(f"--parallel {args.parallel}: give the number of arms to train at once, >= 1")
    md = reproduce(
        args.preset, out=args.out, arms=[a.strip() for a in args.arms.split(",")] if args.arms else None,
        seeds=args.seeds, overrides=args.overrides, data_root=args.data_root, device=args.device,
        per_transform=args.per_transform, quiet=args.quiet,
        **_given(parallel=args.parallel, force=args.force, deadline=args.time_limit and T0 + args.time_limit,
                 download=args.download),
    )  # fmt: skip
    try:  # the one-line result at the top of the report
        line = json.loads((Path(md).parent / "results.json").read_text(encoding="utf-8")).get("headline")
    except (OSError, ValueError, AttributeError):
        line = None
    if line:
        print(line)
    print(f"report: {md}")
    print(f"report: {Path(md).with_suffix('.html')}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from dainv.report import build_report, compare_runs, is_reproduction_dir, write_report
    from dainv.report.load import load_reproduction
    from dainv.runio import is_run_dir
    folders = list(args.folders)
    if len(folders) == 1 and is_reproduction_dir(folders[0]):
        md = write_report(load_reproduction(folders[0]), args.out) if args.out else build_report(folders[0])
    else:
        if bad := [f for f in folders if not is_run_dir(f)]:
            raise DainvError(
                f"{bad[0]} is not a reproduction folder (no reproduce.json) nor a run folder (no "
                "config.yaml and meta.json); give the folder that `dainv reproduce` wrote, or run folders"
            )
        md = compare_runs(folders, args.out or Path("report"))
    print(md)
    print(md.with_suffix(".html"))
    return 0


def _presets(args: argparse.Namespace) -> int:
    names = config.list_presets()
    w = max(len(n) for n in names) if names else 10
    for name in names:
        desc = str(config.load_preset(name).get("description", "")).strip().splitlines()
        print(f"{name:{w}s}  {desc[0] if desc else ''}")
    print(f"(files in {config.PRESET_DIR.resolve()}; protocols: {', '.join(config.PROTOCOLS)}, docs/method.md §8–9)")
    return 0


def _data(args: argparse.Namespace) -> int:
    ds = load_dataset(
        args.spec, args.data_root, download=True if args.download else None, image_size=args.image_size,
        skip_bad=bool(args.skip_bad), allow_missing_classes=args.allow_missing_classes, workers=args.workers,
    )  # fmt: skip
    c, h, w = ds.image_shape
    shown = ", ".join(ds.classes[:10]) + (", ..." if len(ds.classes) > 10 else "")
    print(f"{ds.name}: {len(ds.y_train)} train + {len(ds.y_test)} test images, {c}x{h}x{w}")
    print(f"{ds.num_classes} classes: {shown}")
    print(f"source: {ds.source}")
    for note in ds.notes:
        print(f"note: {note}")
    return 0


#: Each command's handler: ``handler(args) -> exit status``.
HANDLERS = {
    "train": _train, "evaluate": _evaluate, "reproduce": _reproduce, "report": _report,
    "presets": _presets, "data": _data,
}  # fmt: skip

#: What an interrupted command leaves, for its message.
INTERRUPTED = {
    "train": "the run folder keeps its last checkpoint (continue with dainv train --resume RUN)",
    "evaluate": "the evaluation is incomplete; run the same command again",
    "reproduce": "finished arms are kept; run the same command again to continue",
}
