"""dainv performance records (``make bench``): one JSON line per measurement on stdout.

    .venv/bin/python benchmarks/run.py [--smoke] [--only NAME,...] [--out DIR] [options]

Benchmarks (``--only`` takes their names, comma separated):

* ``train_step`` — training samples/s of All-CNN-C at B = 128 through a real
  :class:`dainv.train.Trainer` (``Trainer.train_step``, the recipe itself): the baseline arm
  (M = 1, no taps) against the DAI arm (M = 8, α = 0.1, 9 layers), in fp32 and bf16, and the
  DAI overhead ``dai_time / baseline_time − 1``. With ``--compile`` (default: on, off under
  ``--smoke``) the same pair again in fp32 under ``train.compile=true`` (torch.compile).
* ``denominator`` — the DAI training step with Eq. 3's same-class denominator against the
  all-pairs one (eager, fp32 and bf16; target ≤ 1.05× on the CPU), and the kernel-launching
  operators of both steps on the fused (GPU) path (target ≤ 1.1×).
* ``dai_loss`` — forward + backward of :func:`dainv.invariance.dai_loss` (O(B·D)) against
  :func:`dainv.invariance.dai_loss_pairwise` (B×B) for each distinct All-CNN-C layer size D.
* ``augment`` — ``heavier`` augmentation samples/s, batched (``sample_params`` + ``apply`` on
  128 images) against a per-image Python loop, and against the training step's samples/s.
* ``evaluate`` — wall time of :func:`dainv.evaluate.evaluate` against the bare forward passes
  it needs, and (``evaluate_memory``) its peak RSS in a fresh process for two test-set sizes.

The compared variants run interleaved (A B, then B A, …) after a warm-up, and every number is
the median over rounds, so a noisy shared machine moves both sides alike. Records are appended
to ``DIR/<UTC date>-<host>.jsonl`` as they are made (default DIR: ``benchmarks/results``);
progress goes to stderr. No data set on disk is needed: images are random uint8 tensors of
CIFAR-10's shape (speed does not depend on pixel values).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dainv import runio
from dainv.augment import SCHEMES, apply, sample_params
from dainv.data import Dataset, random_dataset
from dainv.errors import DainvError
from dainv.invariance import dai_loss, dai_loss_pairwise
from dainv.models import AllCNNC
from dainv.runtime import resolve_device, resolve_precision
from dainv.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import (  # noqa: E402
    Recorder,
    StepFn,
    calibrate,
    interleaved,
    log,
    median,
    spread,
    step_fn,
    sync,
)
from bench_eval import bench_evaluate, child_eval_memory  # noqa: E402
from bench_gpu import bench_gpu  # noqa: E402
from bench_ops import bench_ops, trainer_for  # noqa: E402

BENCHES = ("ops", "train_step", "denominator", "dai_loss", "augment", "evaluate")
GPU_BENCHES = ("gpu",)  # only with --device cuda (make bench-gpu)
RESULTS = Path(__file__).resolve().parent / "results"

# Targets of the performance issue (docs/performance.md).
TARGET_OVERHEAD = {"cpu": 0.10, "cuda": 0.05}  # DAI step overhead; CPU target is for bf16
TARGET_AUG_RATIO = 20.0  # augmentation samples/s ≥ 20 × training samples/s


# --------------------------------------------------------------------------------- train_step
@dataclass
class StepPlan:
    """Sizes of the train_step benchmark, from the command line."""

    data: Dataset
    width: float
    batch: int
    rounds: int
    warmup: int
    steps: int  # steps per timing
    configs: list[tuple[str, bool]]  # (precision, compiled)


def _train_step_plan(ctx: dict[str, Any]) -> StepPlan:
    a, dev = ctx["args"], ctx["device"]
    configs: list[tuple[str, bool]] = [(p, False) for p in ("fp32", "bf16")]
    if ctx["compile"]:  # the compiled whole step at precision auto (what presets use)
        configs.append((resolve_precision("auto", dev), True))
    return StepPlan(
        data=random_dataset(4096 if not a.smoke else 512, 16),
        width=a.width,
        batch=32 if a.smoke else 128,
        rounds=a.rounds or (2 if a.smoke else 5),
        warmup=1 if a.smoke else 2,
        # A CPU step takes seconds: one per timing. A GPU step takes milliseconds: time 20 in a row.
        steps=1 if dev.type == "cpu" or a.smoke else 20,
        configs=configs,
    )


def _compile_first_steps(fns: dict[str, StepFn], dev: torch.device, label: str) -> dict[str, float]:
    """Seconds of each arm's first (compiling) step."""
    compile_s: dict[str, float] = {}
    for arm, fn in fns.items():
        log(f"{label}: compiling {arm} (torch.compile, inductor) ...")
        t0 = time.perf_counter()
        fn()
        sync(dev)
        compile_s[arm] = time.perf_counter() - t0
        log(f"{label}: {arm} first step (compile) {compile_s[arm]:.1f} s")
    return compile_s


def _train_step_fields(
    trainers: dict[str, Trainer], t: dict[str, list[float]], plan: StepPlan,
    precision: str, compiled: bool, dev: torch.device,
) -> dict[str, Any]:  # fmt: skip
    """The ``train_step`` record's fields from the interleaved timings ``t``."""
    dai_tr = trainers["dai"]
    b = dai_tr.cfg.train.batch_size
    base, dai = median(t["baseline"]), median(t["dai"])
    overhead = dai / base - 1
    target = TARGET_OVERHEAD.get(dev.type)
    applies = dev.type == "cuda" or precision == "bf16"
    return {
        "variant": "torch.compile (inductor), train.compile=true" if compiled else "eager",
        "precision": precision,
        "compile": compiled,
        "model": "allcnnc",
        "width": plan.width,
        "batch_size": b,
        "baseline": {"views": 1, "alpha": 0.0, "taps": 0},
        "dai": {"views": dai_tr.views, "alpha": dai_tr.cfg.train.alpha, "taps": len(dai_tr.layers)},
        "channels_last": dai_tr.cfg.train.channels_last,
        "rounds": plan.rounds,
        "steps_per_round": plan.steps,
        "warmup_steps": plan.warmup,
        "baseline_step_ms": base * 1e3,
        "dai_step_ms": dai * 1e3,
        "baseline_step_ms_spread": {k: v * 1e3 for k, v in spread(t["baseline"]).items()},
        "dai_step_ms_spread": {k: v * 1e3 for k, v in spread(t["dai"]).items()},
        "baseline_samples_per_s": b / base,
        "dai_samples_per_s": b / dai,
        "dai_overhead": overhead,
        "dai_overhead_paired_median": median([d / s - 1 for d, s in zip(t["dai"], t["baseline"])]),
        "target_max_overhead": target,
        "target_applies": applies,
        "meets_target": (overhead <= target) if (target is not None and applies) else None,
    }


def _bench_train_config(
    ctx: dict[str, Any], rec: Recorder, plan: StepPlan, precision: str, compiled: bool
) -> None:
    """Baseline against DAI steps at one (precision, compiled): one ``train_step`` record."""
    a, dev = ctx["args"], ctx["device"]
    label = f"train_step {precision}{' compiled' if compiled else ''} width {plan.width}"
    log(f"{label}: building baseline and DAI trainers")
    trainers = {
        arm: trainer_for(arm, plan.data, plan.width, plan.batch, precision, device=a.device, compile=compiled)
        for arm in ("baseline", "dai")
    }
    fns = {arm: step_fn(tr) for arm, tr in trainers.items()}
    compile_s: dict[str, float] = {}
    if compiled:
        try:
            compile_s = _compile_first_steps(fns, dev, label)
        except Exception as e:  # noqa: BLE001 - record why, go on with the rest
            log(f"{label}: torch.compile failed: {type(e).__name__}: {e}")
            rec(
                "train_step",
                variant="torch.compile (inductor), train.compile=true",
                precision=precision,
                compile=True,
                width=plan.width,
                error=f"torch.compile failed: {type(e).__name__}: {e}",
            )
            return
    log(f"{label}: warm-up {plan.warmup} step(s) each, then {plan.rounds} interleaved rounds")
    t = interleaved(fns, dev, plan.rounds, plan.steps, warmup=plan.warmup, label=label, progress=True)
    for fn in fns.values():
        fn.check()
    fields = _train_step_fields(trainers, t, plan, precision, compiled, dev)
    if compiled:
        fields["compile_s"] = compile_s
    rec("train_step", **fields)
    ctx["train_sps"][(precision, compiled)] = {
        "baseline": fields["baseline_samples_per_s"],
        "dai": fields["dai_samples_per_s"],
    }


def bench_train_step(ctx: dict[str, Any], rec: Recorder) -> None:
    """Baseline against DAI training steps, in fp32, bf16 and (``--compile``) compiled."""
    plan = _train_step_plan(ctx)
    for precision, compiled in plan.configs:
        _bench_train_config(ctx, rec, plan, precision, compiled)


# ------------------------------------------------------------------------------ denominator
def bench_denominator(ctx: dict[str, Any], rec: Recorder) -> None:
    """The DAI step with the same-class denominator against the all-pairs one."""
    from bench_ops import count_step_ops

    plan, a = _train_step_plan(ctx), ctx["args"]
    for precision in ("fp32", "bf16"):
        trainers = {
            den: trainer_for("dai", plan.data, plan.width, plan.batch, precision, device=a.device, extra=(f"train.denominator={den}",))
            for den in ("all", "same_class")
        }
        label = f"denominator {precision} width {plan.width}"
        t = interleaved({d: step_fn(tr) for d, tr in trainers.items()}, ctx["device"], plan.rounds, plan.steps,
                        warmup=plan.warmup, label=label, progress=True)  # fmt: skip
        ratio = median(t["same_class"]) / median(t["all"])
        kernels = {d: count_step_ops(tr)["kernels"] for d, tr in trainers.items()}
        target = 1.05 if ctx["device"].type == "cpu" else None
        log(f"{label}: same_class/all step {ratio:.3f}, kernels {kernels['same_class']}/{kernels['all']}")
        rec("denominator", precision=precision, variant="eager", width=plan.width, batch_size=plan.batch,
            rounds=plan.rounds, all_step_ms=median(t["all"]) * 1e3, same_class_step_ms=median(t["same_class"]) * 1e3,
            same_class_over_all=ratio, paired_median=median([s / x for s, x in zip(t["same_class"], t["all"])]),
            fused_kernels=kernels, fused_kernels_ratio=kernels["same_class"] / kernels["all"],
            target_max_ratio=target, target_max_kernels_ratio=1.1,
            meets_target=(ratio <= target if target else None) and kernels["same_class"] <= 1.1 * kernels["all"])  # fmt: skip


# --------------------------------------------------------------------------------- dai_loss
def layer_sizes(width: float) -> list[tuple[int, tuple[int, ...], list[str]]]:
    """Distinct activation sizes D of All-CNN-C's conv layers: (D, (C, H, W), layers)."""
    model = AllCNNC(width=width)
    with torch.no_grad():
        _, acts = model(torch.zeros(1, 3, 32, 32), taps=[f"conv{i}" for i in range(1, 10)])
    out: dict[int, tuple[tuple[int, ...], list[str]]] = {}
    for name, a in acts.items():
        d = a[0].numel()
        out.setdefault(d, (tuple(a.shape[1:]), []))[1].append(name)
    return [(d, shape, names) for d, (shape, names) in out.items()]


def bench_dai_loss(ctx: dict[str, Any], rec: Recorder) -> None:
    a = ctx["args"]
    dev = ctx["device"]
    width = 0.125 if a.smoke else 1.0
    k, m = 16, 8
    b = k * m
    rounds = a.rounds or (3 if a.smoke else 7)
    target = 0.01 if a.smoke else 0.1
    groups = torch.arange(k, device=dev).repeat_interleave(m)
    g = torch.Generator(device=dev).manual_seed(0)
    for d, shape, names in layer_sizes(width):
        x = torch.randn(b, *shape, generator=g, device=dev).relu_()
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()

        def run(loss_fn: Callable[..., torch.Tensor], x: torch.Tensor = x) -> None:
            loss_fn(x, groups).backward()
            x.grad = None

        fns = {"dai_loss": lambda run=run: run(dai_loss), "pairwise": lambda run=run: run(dai_loss_pairwise)}
        for fn in fns.values():  # warm-up before calibrating
            fn()
        inner = {name: calibrate(fn, dev, target) for name, fn in fns.items()}
        t = interleaved(fns, dev, rounds, inner, warmup=1)
        fast, slow = median(t["dai_loss"]), median(t["pairwise"])
        log(f"dai_loss D={d} ({'/'.join(names)}): {fast * 1e3:.3f} ms vs pairwise {slow * 1e3:.3f} ms")
        rec(
            "dai_loss",
            D=d,
            shape=list(shape),
            layers=names,
            width=width,
            batch_size=b,
            seeds=k,
            views=m,
            dtype="float32",
            memory_format="channels_last",
            what="forward+backward",
            rounds=rounds,
            calls_per_round=inner,
            dai_loss_ms=fast * 1e3,
            pairwise_ms=slow * 1e3,
            dai_loss_ms_spread={k2: v * 1e3 for k2, v in spread(t["dai_loss"]).items()},
            pairwise_ms_spread={k2: v * 1e3 for k2, v in spread(t["pairwise"]).items()},
            pairwise_over_dai_loss=slow / fast,
        )


# --------------------------------------------------------------------------------- augment
def _time_augment(ctx: dict[str, Any]) -> dict[str, Any]:
    """Batched against per-image ``heavier`` augmentation: sizes, calls per round, samples/s."""
    a, dev = ctx["args"], ctx["device"]
    n = 32 if a.smoke else 128
    scheme = SCHEMES["heavier"]
    interp = "nearest"  # config default (augment.interpolation)
    rounds = a.rounds or (2 if a.smoke else 7)
    target = 0.02 if a.smoke else 0.2
    x = torch.rand(n, 3, 32, 32, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)

    def batched() -> None:
        apply(x, sample_params(scheme, n, g, dev), interp)

    def per_image() -> None:
        for i in range(n):
            apply(x[i : i + 1], sample_params(scheme, 1, g, dev), interp)

    fns = {"batched": batched, "per_image": per_image}
    for fn in fns.values():
        fn()
    inner = {name: calibrate(fn, dev, target) for name, fn in fns.items()}
    t = interleaved(fns, dev, rounds, inner, warmup=1)
    sps_b, sps_l = n / median(t["batched"]), n / median(t["per_image"])
    log(f"augment: batched {sps_b:.0f} samples/s, per-image loop {sps_l:.0f} samples/s")
    return {"n": n, "interp": interp, "rounds": rounds, "inner": inner, "batched": sps_b, "per_image": sps_l}


def _train_samples_per_s(ctx: dict[str, Any], precision: str) -> tuple[dict[str, float], str]:
    """Training samples/s by arm, from this run's train_step bench or else measured here."""
    a, dev = ctx["args"], ctx["device"]
    train = ctx["train_sps"].get((precision, False))
    if train is not None:
        return train, f"train_step bench of this run ({precision}, eager, width {a.width})"
    log(f"augment: no train_step result in this run; timing DAI train steps ({precision}) for the ratio")
    data = random_dataset(512, 16)
    tr = trainer_for("dai", data, a.width, 32 if a.smoke else 128, precision, device=a.device)
    fn = step_fn(tr)
    steps = interleaved({"dai": fn}, dev, 2 if a.smoke else 3, 1, warmup=1)["dai"]
    fn.check()
    train = {"dai": tr.cfg.train.batch_size / median(steps)}
    return train, f"measured here: DAI train steps ({precision}, eager, width {a.width})"


def bench_augment(ctx: dict[str, Any], rec: Recorder) -> None:
    """Augmentation samples/s, batched and per image, and against training samples/s."""
    aug = _time_augment(ctx)
    sps_b, sps_l = aug["batched"], aug["per_image"]
    precision = resolve_precision("auto", ctx["device"])
    train, source = _train_samples_per_s(ctx, precision)
    # The stricter ratio: against the faster training arm measured.
    arm = max(train, key=train.get)
    ratio = sps_b / train[arm]
    rec(
        "augment",
        scheme="heavier",
        interpolation=aug["interp"],
        batch_size=aug["n"],
        what="sample_params + apply on float images already on the device",
        rounds=aug["rounds"],
        calls_per_round=aug["inner"],
        batched_samples_per_s=sps_b,
        per_image_samples_per_s=sps_l,
        batched_over_per_image=sps_b / sps_l,
        train_samples_per_s=train[arm],
        train_arm=arm,
        train_precision=precision,
        train_source=source,
        train_samples_per_s_by_arm=train,
        aug_over_train=ratio,
        target_min_aug_over_train=TARGET_AUG_RATIO,
        meets_target=ratio >= TARGET_AUG_RATIO,
    )


# --------------------------------------------------------------------------------- main
RUNNERS = {
    "ops": bench_ops,
    "gpu": bench_gpu,
    "train_step": bench_train_step,
    "denominator": bench_denominator,
    "dai_loss": bench_dai_loss,
    "augment": bench_augment,
    "evaluate": bench_evaluate,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="dainv benchmarks: one JSON record per measurement on stdout, appended to "
        "OUT/<UTC date>-<host>.jsonl; progress on stderr.",
    )
    p.add_argument("--smoke", action="store_true", help="every measurement at toy size (< 60 s)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--width", type=float, default=None, help="All-CNN-C width for train_step (default 1; smoke 0.125)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds for train_step, dai_loss, augment")
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="the train.compile=true variant of train_step (auto: on, off under --smoke: a cold "
        "inductor compile takes ~60 s on 2 cores)",
    )
    p.add_argument("--eval-n", type=int, default=10000, help="test images for evaluate (default 10000)")
    p.add_argument("--eval-width", type=float, default=0.25, help="model width for evaluate (default 0.25)")
    p.add_argument("--eval-rounds", type=int, default=None, help="rounds of evaluate vs bare forwards (default 2)")
    p.add_argument("--gpu-numerics", default=None, help="gpu: subset of fp32,tf32,bf16 (default all)")
    p.add_argument("--gpu-modes", default=None, help="gpu: subset of eager,compiled,cuda_graphs,compiled_graphs (default all)")
    p.add_argument("--gpu-arms", default=None, help="gpu: subset of baseline,dai,control (default all)")
    p.add_argument("--child-eval-memory", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.width is None:
        args.width = 0.125 if args.smoke else 1.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_eval_memory is not None:
        child_eval_memory(args.child_eval_memory)
        return 0
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in BENCHES + GPU_BENCHES]
        if unknown:
            print(
                f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES + GPU_BENCHES)}",
                file=sys.stderr,
            )
            return 2
    else:
        names = list(BENCHES)
    names = [b for b in BENCHES + GPU_BENCHES if b in names]  # train_step before augment
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        dev = resolve_device(args.device)
    except DainvError as e:
        print(f"benchmarks: {e}", file=sys.stderr)
        return 2
    if "gpu" in names and dev.type != "cuda":
        print("benchmarks: the gpu benchmark needs a CUDA GPU (--device cuda); none here", file=sys.stderr)
        return 2
    env = runio.environment(dev)
    rec = Recorder(args.out, env, args.smoke)
    compile_on = args.compile == "on" or (args.compile == "auto" and not args.smoke)
    ctx: dict[str, Any] = {"args": args, "device": dev, "train_sps": {}, "compile": compile_on}
    log(
        f"{', '.join(names)} on {env.get('cpu')} ({env.get('cpu_threads')} threads), device {dev}"
        f"{' [smoke]' if args.smoke else ''}; records → {rec.path}"
    )
    t0 = time.perf_counter()
    failed = []
    for name in names:
        t1 = time.perf_counter()
        log(f"== {name}")
        try:
            RUNNERS[name](ctx, rec)
        except Exception as e:  # noqa: BLE001 - record the failure, run the other benchmarks
            traceback.print_exc()
            rec(name, error=f"{type(e).__name__}: {e}")
            failed.append(name)
        log(f"== {name} done in {time.perf_counter() - t1:.1f} s")
    log(f"{len(rec.records)} records in {time.perf_counter() - t0:.1f} s → {rec.path}")
    if failed:
        log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
