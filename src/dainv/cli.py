"""The ``dainv`` command: train, evaluate, reproduce, report, presets.

Every user-fixable problem (a :class:`~dainv.errors.DainvError`) is printed as one message
and exits with status 2, without a traceback unless ``--debug``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dainv import __version__
from dainv.errors import DainvError

EPILOG = """\
examples:
  dainv reproduce --preset quick              # the paper's experiment, small, on a CPU (~10 min)
  dainv train --preset quick --arm dai --out runs/dai
  dainv evaluate runs/dai --per-transform
  dainv report reproductions/quick
  torchrun --nproc_per_node=4 -m dainv train --preset paper --arm dai --out runs/dai

Settings: defaults are SPEC.md's (the paper's DAI arm); a preset, then --config files, then
--arm, then --set key=value overrides (e.g. --set train.epochs=20 --set model.width=0.5).
Data: --data-root, else $DAINV_DATA, else ~/.cache/dainv (CIFAR-10 is downloaded there if missing).
"""


def _common_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="a preset from configs/ (see `dainv presets`)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="YAML config file(s)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one setting, e.g. train.epochs=10 (repeatable)",
    )
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (else $DAINV_DATA)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
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
            "Train one model. --arm sets the views per seed and alpha: baseline (M=1, alpha=0), "
            "dai (M=8, alpha=0.1), control (M=8, alpha=0). The run folder gets config.yaml, "
            "meta.json, metrics.jsonl (per-epoch CE, per-layer DAI loss, accuracy) and checkpoints."
        ),
    )
    _common_config_args(p)
    p.add_argument("--arm", choices=["baseline", "dai", "control"], help="which arm of SPEC §5")
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME)")
    p.add_argument("--resume", type=Path, metavar="RUN", help="continue the run in this folder")
    p.add_argument("--force", action="store_true", help="start again in a folder that holds a run")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=N")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        help="shortcut for --set train.precision (auto: bf16 only where the hardware has it)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--evaluate", action="store_true", help="run `dainv evaluate` when training ends")

    p = sub.add_parser(
        "evaluate",
        help="accuracy and per-layer invariance scores of a trained run",
        description=(
            "Test accuracy (single view and mean softmax over 10 light views) and the invariance "
            "score (Eq. 2) at every layer for every test image under 5 heavier_eval "
            "transformations. Writes eval/summary.json and eval/scores.npz."
        ),
    )
    p.add_argument("source", type=Path, metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--out", type=Path, help="output folder (default RUN/eval)")
    p.add_argument("--per-transform", action="store_true", help="also score each transformation alone")
    p.add_argument("--n-test", type=int, help="first N test images only (default: the run's setting)")
    p.add_argument("--seed", type=int, help="seed of the sampled transformations (default 0)")
    p.add_argument("--dataset", help="cifar10, cifar100 or npz:PATH (default: the run's data set)")
    p.add_argument("--data-root", help="folder holding the data set (else $DAINV_DATA)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
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
    p.add_argument("--arms", help="comma-separated subset of baseline,dai,control (default: the preset's)")
    p.add_argument("--seeds", type=int, default=1, help="repeat over seeds 0..N-1 (mean ± sd)")
    p.add_argument("--out", type=Path, help="reproduction folder (default reproductions/PRESET)")
    p.add_argument("--per-transform", action="store_true", default=None, help="per-transformation scores too")

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
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def _train(args: argparse.Namespace) -> int:
    from dainv.config import load_config
    from dainv.train import train

    ov = list(args.overrides)
    for flag, key in (("epochs", "train.epochs"), ("seed", "seed"), ("precision", "train.precision")):
        if getattr(args, flag) is not None:
            ov.append(f"{key}={getattr(args, flag)}")
    if args.compile:
        ov.append("train.compile=true")
    if args.data_root:
        ov.append(f"data.root={args.data_root}")
    if args.device:
        ov.append(f"device={args.device}")
    if args.resume:
        if args.preset or args.config or args.arm or args.out:
            raise DainvError("--resume continues a run with its own config; drop --preset/--config/--arm/--out")
        cfg = None
        if ov:
            raise DainvError(f"--resume takes no overrides (got {ov}); the run's config.yaml is used")
        run_dir = args.resume
    else:
        name_hint = "-".join(x for x in (args.preset, args.arm) if x) or "run"
        cfg = load_config(args.preset, args.config, [f"name={name_hint}", *ov], arm=args.arm)
        run_dir = args.out or Path("runs") / cfg.name
    trainer = train(cfg, run_dir, resume=bool(args.resume), force=args.force, quiet=args.quiet)
    if trainer.is_main:
        last = trainer.history[-1] if trainer.history else {}
        print(f"finished {run_dir}: test accuracy {last.get('test_acc', float('nan')):.4f}")
        if args.evaluate:
            from dainv.evaluate import evaluate

            evaluate(run_dir, data=trainer.data, quiet=args.quiet)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dainv.evaluate import evaluate

    s = evaluate(
        args.source,
        out_dir=args.out,
        data_root=args.data_root,
        dataset=args.dataset,
        device=args.device,
        per_transform=args.per_transform or None,
        n_test=args.n_test,
        seed=args.seed,
        quiet=args.quiet,
    )
    inv = s["invariance"]
    acc = s["accuracy"]
    print("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    print("median invariance per layer:")
    print("  " + " ".join(f"{k:>7}" for k in inv["layers"]))
    print("  " + " ".join(f"{inv['median'][k]:7.3f}" for k in inv["layers"]))
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from dainv.reproduce import reproduce

    if not args.preset:
        raise DainvError("reproduce needs --preset (see `dainv presets`), e.g. --preset quick")
    if args.config:
        raise DainvError("reproduce takes a --preset and --set overrides, not --config files")
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
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

    for name in list_presets():
        desc = str(load_preset(name).get("description", "")).strip().splitlines()
        print(f"{name:10s} {desc[0] if desc else ''}")
    print(f"(files in {PRESET_DIR.resolve()})")
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
        print("dainv: interrupted; the run folder keeps its last checkpoint (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
