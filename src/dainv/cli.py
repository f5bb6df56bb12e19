"""The ``dainv`` command: train, evaluate, reproduce, report, presets.

Every user-fixable problem (a :class:`~dainv.errors.DainvError`) is printed as one message
and exits with status 2, without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from pathlib import Path
from typing import Any

from dainv import __version__
from dainv.config import ARMS, PROTOCOLS
from dainv.errors import DainvError

EPILOG = """\
examples:
  dainv reproduce --preset quick              # the paper's experiment, small, on a CPU (~10 min)
  dainv train --preset quick --arm dai --out runs/dai
  dainv evaluate runs/dai --per-transform
  dainv report reproductions/quick
  torchrun --nproc_per_node=4 -m dainv train --preset paper --arm dai --out runs/dai

Settings: the defaults are the paper's recipe (docs/method.md §5 and §7): All-CNN-C on
CIFAR-10, 350 epochs, lr 0.01 x0.1 at epochs 200/250/300, 128 samples per step, fp32, the
paper's text where it and the authors' code differ (method.protocol=paper; authors_code
switches to the code's choices, docs/method.md §9). A preset, then --config files, then --arm,
then --set key=value overrides (e.g. --set train.epochs=20 --set train.lr=1e-3) change them.
Data: --data-root, else $DAINV_DATA, else ~/.cache/dainv (CIFAR-10 is downloaded there if missing).
The method, the settings and the presets: docs/method.md.
"""

ARM_HELP = ", ".join(f"{k} (M={v['views']}, alpha={v['alpha']:g})" for k, v in ARMS.items())


def _common_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a preset from configs/ (see `dainv presets`)")
    p.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config file(s)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one setting, e.g. train.epochs=10 (repeatable)",
    )
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (else $DAINV_DATA)")
    p.add_argument(
        "--device", help="auto (default: the first GPU, else the CPU), cpu, cuda or cuda:N"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars; one line per epoch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dainv",
        description=(
            "Data augmentation invariance (Hernández-García, König & Kietzmann, 2019): train "
            "All-CNN-C with and without the DAI loss, measure per-layer invariance, and "
            "reproduce the paper's figures."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dainv {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train one run (one arm) into a run folder",
        description=(
            f"Train one model. --arm (required) sets the views per seed M and alpha: {ARM_HELP} "
            "(docs/method.md §5). Without a preset the settings are the paper's full recipe "
            "(350 epochs: a GPU job); `--preset quick` runs in minutes on a CPU. The run folder "
            "gets config.yaml, meta.json, metrics.jsonl (per-epoch CE, per-layer DAI loss, "
            "accuracy) and checkpoints. --resume RUN continues a run; with --epochs N (or --set "
            "train.epochs=N) it extends a finished one."
        ),
    )
    _common_config_args(p)
    p.add_argument("--arm", choices=list(ARMS), help=f"which arm (docs/method.md §5): {ARM_HELP}")
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME)")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the run in this folder (with --epochs N: extend a finished run to N epochs)",
    )
    p.add_argument("--force", action="store_true", help="start again in a folder that holds a run")
    p.add_argument("--epochs", help="shortcut for --set train.epochs=N (default 350)")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="shortcut for --set train.precision (auto: bf16 only where the hardware has it)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument(
        "--evaluate", action="store_true", help="run `dainv evaluate` when training ends"
    )

    p = sub.add_parser(
        "evaluate",
        help="accuracy and per-layer invariance scores of a trained run",
        description=(
            "Test accuracy (single view and mean softmax over 10 light views) and the invariance "
            "score (Eq. 2) at every layer for every test image under 5 heavier_eval "
            "transformations (docs/method.md §6). Writes eval/summary.json and eval/scores.npz. "
            "A network trained elsewhere: --model NAME_OR_FACTORY --weights FILE.pt --data DATASET."
        ),
    )
    p.add_argument(
        "source",
        type=Path,
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        help="a run folder or a dainv checkpoint (leave out with --weights)",
    )
    p.add_argument("--out", type=Path, help="output folder (default RUN/eval)")
    p.add_argument(
        "--per-transform",
        action="store_true",
        help="also score each transformation alone and print the layer x transformation table",
    )
    p.add_argument(
        "--n-test", type=int, help="first N >= 2 test images only (default: the run's setting)"
    )
    p.add_argument("--seed", type=int, help="seed of the sampled transformations (default 0)")
    p.add_argument(
        "--dataset",
        "--data",
        dest="dataset",
        metavar="DATASET",
        help="cifar10, cifar100, npz:PATH, folder:PATH or tinyimagenet:PATH (default: the run's data set)",
    )
    p.add_argument(
        "--model",
        metavar="NAME_OR_FACTORY",
        help="evaluate a network not trained by dainv: a registered model or module.path:factory",
    )
    p.add_argument(
        "--weights", type=Path, metavar="FILE.pt", help="the --model's weights (a state_dict)"
    )
    p.add_argument(
        "--layers",
        metavar="A,B,C",
        help="comma-separated layer names to score (default: all of the model's layers)",
    )
    p.add_argument("--data-root", help="folder holding the data set (else $DAINV_DATA)")
    p.add_argument(
        "--device", help="auto (default: the first GPU, else the CPU), cpu, cuda or cuda:N"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "reproduce",
        help="train baseline, DAI and control arms, evaluate them, write the report",
        description=(
            "Reproduce the paper's experiment with one command: every arm from the same initial "
            "weights, evaluation, figures and report.md/report.html. Run it again to resume."
        ),
    )
    _common_config_args(p)
    p.add_argument(
        "--arms", help=f"comma-separated subset of {','.join(ARMS)} (default: the preset's)"
    )
    p.add_argument("--seeds", type=int, default=1, help="repeat over seeds 0..N-1 (mean ± sd)")
    p.add_argument("--out", type=Path, help="reproduction folder (default reproductions/PRESET)")
    p.add_argument(
        "--per-transform", action="store_true", default=None, help="per-transformation scores too"
    )
    p.add_argument(
        "--parallel", type=int, metavar="N", help="train up to N arms at once (default 1)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="start the folder again when its settings differ from the earlier reproduction's",
    )

    p = sub.add_parser(
        "report",
        help="rebuild the report of a reproduction folder, or compare any run folders",
        description=(
            "Write report.md, a self-contained report.html, results.json and figures/. Given one "
            "reproduction folder (it holds reproduce.json), the report goes into that folder. Given "
            "run folders (RUN_A RUN_B ...), they are compared side by side, arms inferred from each "
            "run's views and alpha; the report goes into --out (default: report/ in the current "
            "folder). Medians carry 95 % paired bootstrap CIs; the method is in docs/method.md."
        ),
    )
    p.add_argument("folders", type=Path, nargs="+", metavar="FOLDER", help="a reproduction folder, or run folders")
    p.add_argument("--out", type=Path, help="output folder (default: the reproduction folder itself; ./report for run folders)")

    sub.add_parser("presets", help="list the presets and what each is for")
    for p in sub.choices.values():  # `dainv train --debug` works as well as `dainv --debug train`
        p.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


def _supports(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (features that other parts add over time)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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
    from dainv.config import RunConfig, apply_overrides, load_config
    from dainv.runtime import dist_info
    from dainv.train import train

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
    main_rank = dist_info()[0] == 0
    extra: dict[str, Any] = {}
    if args.resume:
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
            from dainv.runio import is_run_dir

            if is_run_dir(args.resume) and not _supports(train, "extend_epochs"):
                raise DainvError(
                    "extending a run (--resume with --epochs/train.epochs) is not available in this "
                    "version of dainv's trainer"
                )
            extra["extend_epochs"] = n
        cfg = None
        run_dir = args.resume
    else:
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


def _median_row(stats: Any, layers: list[str]) -> dict[str, float]:
    """``{layer: median}`` from either ``{layer: median}`` or a statistics dict with ``median``."""
    if isinstance(stats, dict) and isinstance(stats.get("median"), dict):
        stats = stats["median"]
    return {k: stats.get(k, float("nan")) for k in layers} if isinstance(stats, dict) else {}


def _print_summary(s: dict[str, Any]) -> None:
    inv = s["invariance"]
    acc = s["accuracy"]
    layers = list(inv["layers"])
    print(
        "accuracy: "
        + ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if isinstance(v, (int, float)))
    )
    print("median invariance per layer:")
    print("  " + " ".join(f"{k:>7}" for k in layers))
    print("  " + " ".join(f"{inv['median'][k]:7.3f}" for k in layers))
    pt = s.get("per_transform")
    if pt:
        cols = {"all": inv["median"], **{t: _median_row(v, layers) for t, v in pt.items()}}
        w = max(7, *(len(c) for c in cols)) + 1
        lw = max(5, *(len(x) for x in layers))
        print("median invariance per layer and transformation (docs/method.md §6):")
        print("  " + f"{'layer':<{lw}}" + "".join(f"{c:>{w}}" for c in cols))
        for layer in layers:
            print(
                "  "
                + f"{layer:<{lw}}"
                + "".join(f"{cols[c].get(layer, float('nan')):>{w}.3f}" for c in cols)
            )


def _evaluate(args: argparse.Namespace) -> int:
    from dainv import evaluate as ev
    from dainv.runtime import resolve_device

    if args.device:
        resolve_device(args.device)  # an invalid device is refused before any work
    if args.n_test is not None and args.n_test < 2:
        raise DainvError(
            f"--n-test {args.n_test}: give at least 2 test images (Eq. 2's denominator is the mean "
            "distance to the other test images, docs/method.md §2)"
        )
    layers = [x.strip() for x in args.layers.split(",") if x.strip()] if args.layers else None
    if args.layers is not None and not layers:
        raise DainvError(
            "--layers is empty; give comma-separated layer names, e.g. --layers conv7,conv8"
        )
    common = dict(
        per_transform=args.per_transform or None,
        n_test=args.n_test,
        seed=args.seed,
        quiet=args.quiet,
    )
    if args.weights is not None or args.model is not None:
        missing = [
            f
            for f, v in (
                ("--model", args.model),
                ("--weights", args.weights),
                ("--data", args.dataset),
            )
            if not v
        ]
        if missing:
            raise DainvError(
                f"evaluating a network trained elsewhere needs --model, --weights and --data; missing "
                f"{', '.join(missing)} (e.g. --model allcnnc --weights net.pt --data cifar10)"
            )
        if args.source is not None:
            raise DainvError(
                f"give either a run folder or checkpoint ({args.source}) or --model/--weights, not both"
            )
        fn = getattr(ev, "evaluate_weights", None)
        if fn is None:
            raise DainvError(
                "--model/--weights: this version of dainv cannot evaluate bare weights yet"
            )
        kwargs = dict(
            model=args.model, weights=args.weights, data=args.dataset, layers=layers, out=args.out,
            device=args.device, data_root=args.data_root, **common,
        )  # fmt: skip
        s = fn(
            **{
                k: v
                for k, v in kwargs.items()
                if _supports(fn, k) or k in ("model", "weights", "data", "layers", "out", "device")
            }
        )
    else:
        if args.source is None:
            raise DainvError(
                "give a run folder or checkpoint to evaluate (dainv evaluate runs/dai), or a network "
                "trained elsewhere with --model NAME --weights FILE.pt --data DATASET"
            )
        kwargs = dict(
            out_dir=args.out,
            data_root=args.data_root,
            dataset=args.dataset,
            device=args.device,
            **common,
        )
        if layers is not None:
            if not _supports(ev.evaluate, "layers"):
                raise DainvError("--layers works with --model/--weights in this version of dainv")
            kwargs["layers"] = layers
        s = ev.evaluate(args.source, **kwargs)
    _print_summary(s)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from dainv.reproduce import reproduce

    if not args.preset:
        raise DainvError("reproduce needs --preset (see `dainv presets`), e.g. --preset quick")
    if args.config:
        raise DainvError("reproduce takes a --preset and --set overrides, not --config files")
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
    extra: dict[str, Any] = {}
    if args.parallel is not None:
        if args.parallel < 1:
            raise DainvError(
                f"--parallel {args.parallel}: give the number of arms to train at once, >= 1"
            )
        if not _supports(reproduce, "parallel"):
            raise DainvError("--parallel is not available in this version of dainv's reproduce")
        extra["parallel"] = args.parallel
    if args.force:
        if not _supports(reproduce, "force"):
            raise DainvError("--force is not available in this version of dainv's reproduce")
        extra["force"] = True
    reproduce(
        args.preset,
        out=args.out,
        arms=arms,
        seeds=args.seeds,
        overrides=args.overrides,
        data_root=args.data_root,
        device=args.device,
        per_transform=args.per_transform,
        quiet=args.quiet,
        **extra,
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    from dainv.report import build_report, compare_runs, is_reproduction_dir, write_report
    from dainv.report.load import load_reproduction
    from dainv.runio import is_run_dir

    folders = list(args.folders)
    if len(folders) == 1 and is_reproduction_dir(folders[0]):
        md = write_report(load_reproduction(folders[0]), args.out) if args.out else build_report(folders[0])
    else:
        bad = [f for f in folders if not is_run_dir(f)]
        if bad:
            raise DainvError(
                f"{bad[0]} is not a reproduction folder (no reproduce.json) nor a run folder (no "
                "config.yaml and meta.json); give the folder that `dainv reproduce` wrote, or run folders"
            )
        md = compare_runs(folders, args.out or Path("report"))
    print(md)
    print(md.with_suffix(".html"))
    return 0


def _presets(args: argparse.Namespace) -> int:
    from dainv.config import PRESET_DIR, list_presets, load_preset

    names = list_presets()
    w = max(len(n) for n in names) if names else 10
    for name in names:
        desc = str(load_preset(name).get("description", "")).strip().splitlines()
        print(f"{name:{w}s}  {desc[0] if desc else ''}")
    print(
        f"(files in {PRESET_DIR.resolve()}; protocols: {', '.join(PROTOCOLS)}, docs/method.md §8–9)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {
        "train": _train,
        "evaluate": _evaluate,
        "reproduce": _reproduce,
        "report": _report,
        "presets": _presets,
    }[args.command]
    try:
        return handler(args)
    except DainvError as e:
        if args.debug:
            raise
        print(f"dainv: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            f"dainv: interrupted; {_INTERRUPTED.get(args.command, 'nothing more was done')}",
            file=sys.stderr,
        )
        return 130


_INTERRUPTED = {
    "train": "the run folder keeps its last checkpoint (continue with dainv train --resume RUN)",
    "evaluate": "the evaluation is incomplete; run the same command again",
    "reproduce": "finished arms are kept; run the same command again to continue",
}


if __name__ == "__main__":
    raise SystemExit(main())
