"""The ``dainv`` argument parser as data: the shared options, each defined once, then every command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from dainv import __version__
from dainv.config import ARMS
from dainv.data.registry import dataset_kinds, kinds_text
from dainv.runtime import Precision

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
Data: --data-root, else $DAINV_DATA, else ~/.cache/dainv. CIFAR-10 is downloaded when missing:
into ~/.cache/dainv, or into another folder only with --download (a mistyped path is refused).
The method, the settings and the presets: docs/method.md.
"""

#: ``--download`` of every command that loads data (the rule: :func:`dainv.data.cifar.may_download`).
DOWNLOAD_HELP = (
    "download CIFAR (about 163 MB) into --data-root / $DAINV_DATA when it is missing there; "
    "without it dainv downloads only into the default data folder (~/.cache/dainv)"
)

ARM_HELP = ", ".join(f"{k} (M={v['views']}, alpha={v['alpha']:g})" for k, v in ARMS.items())

#: One option: its flags and ``add_argument``'s keywords.
Option = tuple[tuple[str, ...], dict[str, Any]]


def _o(*flags: str, **kw: Any) -> Option:
    return flags, kw


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds > 0, e.g. 540")
    return v


def _time_limit(what: str) -> Option:
    return _o(
        "--time-limit", type=_seconds, metavar="SECONDS",
        help=f"stop {what} at a step boundary before SECONDS have passed since the command "
        "started, with a complete checkpoint; exit status 75; the same command (or --resume) "
        "goes on from there, bit for bit as if never stopped",
    )  # fmt: skip


DEVICE = _o("--device", help="auto (default: the first GPU, else the CPU), cpu, cuda or cuda:N")
#: Where the data set is, and whether CIFAR may be downloaded there: every command that loads data.
DATA_ROOT = [
    _o("--data-root", help="folder holding the data set, e.g. cifar-10-batches-py/ (else $DAINV_DATA)"),
    _o("--download", action="store_true", help=DOWNLOAD_HELP),
]
#: How an image folder is read (``evaluate``, ``data``; a run has data.image_size/skip_bad).
IMAGE_FOLDER = [
    _o("--image-size", type=int, metavar="N",
       help="image folders: resize every image to N x N pixels (data.image_size; default: the "
       "run's, else the images' own size)"),
    _o("--skip-bad", action="store_true", default=None,
       help="image folders: leave unreadable images out, counted and reported (data.skip_bad)"),
]  # fmt: skip
#: The settings of a run (``train``, ``reproduce``).
CONFIG = [
    _o("--preset", help="a preset from configs/ (see `dainv presets`)"),
    _o("--config", action="append", default=[], metavar="FILE", help="YAML config file(s)"),
    _o("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
       help="override one setting, e.g. train.epochs=10 (repeatable)"),
    *DATA_ROOT,
    DEVICE,
    _o("--quiet", action="store_true", help="no progress bars; one line per epoch"),
]  # fmt: skip


def _commands() -> dict[str, tuple[dict[str, Any], list[Option]]]:
    """Each command's ``add_parser`` keywords and options (built late: later data-set kinds listed)."""
    train = dict(
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
    evaluate = dict(
        help="accuracy and per-layer invariance scores of a trained run",
        description=(
            "Test accuracy (single view and mean softmax over 10 light views) and the invariance "
            "score (Eq. 2) at every layer for every test image under 5 heavier_eval "
            "transformations (docs/method.md §6). Writes eval/summary.json and eval/scores.npz. "
            "A network trained elsewhere: --model NAME_OR_FACTORY --weights FILE.pt --data DATASET."
        ),
    )
    reproduce = dict(
        help="train baseline, DAI and control arms, evaluate them, write the report",
        description=(
            "Reproduce the paper's experiment with one command: every arm from the same initial "
            "weights, evaluation, figures and report.md/report.html. Run it again to resume."
        ),
    )
    report = dict(
        help="rebuild the report of a reproduction folder, or compare any run folders",
        description=(
            "Write report.md, a self-contained report.html, results.json and figures/. Given one "
            "reproduction folder (it holds reproduce.json), the report goes into that folder. Given "
            "run folders (RUN_A RUN_B ...), they are compared side by side, arms inferred from each "
            "run's views and alpha; the report goes into --out (default: report/ in the current "
            "folder). Medians carry 95 % paired bootstrap CIs; the method is in docs/method.md."
        ),
    )
    data = dict(
        help="check a data set: load it once, print what dainv sees, fill the cache",
        description=(
            "Load a data set once, print what dainv sees (classes, shapes, notes on skipped files "
            "and checksums) and fill an image folder's decode cache, so that training starts at "
            "once. Exit status 0 when it loads, 2 with a message when it does not."
        ),
        epilog="data sets:\n" + kinds_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return {
        "train": (train, [
            *CONFIG,
            _o("--arm", choices=list(ARMS), help=f"which arm (docs/method.md §5): {ARM_HELP}"),
            _o("--out", type=Path, help="run folder (default runs/NAME)"),
            _o("--resume", type=Path, metavar="RUN",
               help="continue the run in this folder (with --epochs N: extend a finished run to N epochs)"),
            _o("--force", action="store_true", help="start again in a folder that holds a run"),
            _o("--accept-changed-data", action="store_true",
               help="with --resume: go on although the data differs from what the run started with "
               "(refused otherwise; recorded in meta.json)"),
            _time_limit("training"),
            _o("--epochs", help="shortcut for --set train.epochs=N (default 350)"),
            _o("--seed", type=int, help="shortcut for --set seed=N"),
            _o("--precision", choices=list(get_args(Precision)),
               help="shortcut for --set train.precision (auto: bf16 only where the hardware has it)"),
            _o("--compile", action="store_true", help="torch.compile the model"),
            _o("--evaluate", action="store_true", help="run `dainv evaluate` when training ends"),
        ]),
        "evaluate": (evaluate, [
            _o("source", type=Path, nargs="?", metavar="RUN_OR_CHECKPOINT",
               help="a run folder or a dainv checkpoint (leave out with --weights)"),
            _o("--out", type=Path, help="output folder (default RUN/eval)"),
            _o("--checkpoint", metavar="epoch-NNNN",
               help="score a kept checkpoint of the run (train.keep_epochs) into RUN/eval-epoch-NNNN "
               "instead of the final model"),
            _o("--per-transform", action="store_true",
               help="also score each transformation alone and print the layer x transformation table"),
            _o("--n-test", type=int,
               help="N >= 2 test images only: the first N, interleaved by class where the data is "
               "stored in class order (docs/method.md §5; default: the run's setting — another is "
               "not the run's own evaluation: use --out)"),
            _o("--seed", type=int, help="seed of the sampled transformations (default 0)"),
            _o("--dataset", "--data", dest="dataset", metavar="DATASET",
               help=f"{', '.join(dataset_kinds())} (default: the run's data set)"),
            _o("--model", metavar="NAME_OR_FACTORY",
               help="evaluate a network not trained by dainv: a registered model or module.path:factory"),
            _o("--weights", type=Path, metavar="FILE.pt", help="the --model's weights (a state_dict)"),
            _o("--layers", metavar="A,B,C",
               help="layer names to score, comma-separated (or [A,B,C], as train.layers takes "
               "them; default: all of the model's layers; a plain module's blocks)"),
            _o("--model-kwargs", metavar="JSON",
               help="the --model's constructor arguments, a JSON object, e.g. '{\"width\": 0.5}' "
               "(as --set model.kwargs takes them)"),
            _o("--normalize", metavar="MEAN/STD",
               help="a network trained on normalised input: per-channel mean and std, e.g. "
               "0.49,0.48,0.45/0.25,0.24,0.26 (one value each for all channels); applied after "
               "each transformation, which acts on [0, 1] images (docs/method.md §6)"),
            *IMAGE_FOLDER,
            *DATA_ROOT,
            DEVICE,
            _o("--quiet", action="store_true", help="no progress bar"),
        ]),
        "reproduce": (reproduce, [
            *CONFIG,
            _o("--arms", help=f"comma-separated arms: {','.join(ARMS)} or the preset's variants "
               "(default: the preset's arms)"),
            _o("--seeds", type=int, default=1, help="repeat over seeds 0..N-1 (mean ± sd)"),
            _o("--out", type=Path, help="reproduction folder (default reproductions/PRESET)"),
            _o("--per-transform", action="store_true", default=None, help="per-transformation scores too"),
            _o("--parallel", type=int, metavar="N", help="train up to N arms at once (default 1)"),
            _time_limit("training (every arm) and start no evaluation"),
            _o("--force", action="store_true",
               help="start the folder again when its settings differ from the earlier reproduction's"),
        ]),
        "report": (report, [
            _o("folders", type=Path, nargs="+", metavar="FOLDER", help="a reproduction folder, or run folders"),
            _o("--out", type=Path,
               help="output folder (default: the reproduction folder itself; ./report for run folders)"),
        ]),
        "presets": (dict(help="list the presets and what each is for"), []),
        "data": (data, [
            _o("spec", help="data set: " + ", ".join(dataset_kinds())),
            *DATA_ROOT,
            *IMAGE_FOLDER,
            _o("--allow-missing-classes", action="store_true", help="accept classes without images"),
            _o("--workers", type=int, help="decoding processes (default: up to 8)"),
        ]),
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dainv",
        description=(
            "Data augmentation invariance (Hernández-García, König & Kietzmann, 2019): train "
            "All-CNN-C, the thesis's WRN and DenseNet or your own network (model.name="
            "module:factory) with and without the DAI loss, measure per-layer invariance of any "
            "trained network, and reproduce the paper's figures."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dainv {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (kw, options) in _commands().items():
        p = sub.add_parser(name, **kw)
        for flags, okw in options:
            p.add_argument(*flags, **okw)
        # `dainv train --debug` works as well as `dainv --debug train`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser
