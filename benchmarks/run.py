"""dainv performance records (``make bench``): one JSON line per measurement on stdout.

    .venv/bin/python benchmarks/run.py [--smoke] [--only NAME,...] [--out DIR] [options]

Benchmarks (``--only`` takes their names, comma separated):

* ``train_step`` — training samples/s of All-CNN-C at B = 128 through a real
  :class:`dainv.train.Trainer` (``Trainer.train_step``, the recipe itself): the baseline arm
  (M = 1, no taps) against the DAI arm (M = 8, α = 0.1, 9 layers), in fp32 and bf16, and the
  DAI overhead ``dai_time / baseline_time − 1``. With ``--compile`` (default: on, off under
  ``--smoke``) the same pair again in fp32 under ``train.compile=true`` (torch.compile).
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
import datetime as _dt
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dainv import runio
from dainv.augment import SCHEMES, apply, sample_params
from dainv.config import load_config
from dainv.data import Dataset, random_dataset
from dainv.errors import DainvError
from dainv.invariance import dai_loss, dai_loss_pairwise
from dainv.models import AllCNNC
from dainv.runtime import autocast, native_bf16, resolve_device, resolve_precision
from dainv.train import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import bench_gpu  # noqa: E402
from bench_ops import bench_ops  # noqa: E402

BENCHES = ("ops", "train_step", "dai_loss", "augment", "evaluate")
GPU_BENCHES = ("gpu",)  # only with --device cuda (make bench-gpu)
RESULTS = Path(__file__).resolve().parent / "results"

# Targets of the performance issue (docs/performance.md).
TARGET_OVERHEAD = {"cpu": 0.10, "cuda": 0.05}  # DAI step overhead; CPU target is for bf16
TARGET_AUG_RATIO = 20.0  # augmentation samples/s ≥ 20 × training samples/s
TARGET_EVAL_RATIO = 1.25  # evaluate wall time ≤ 1.25 × its forward passes


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


# --------------------------------------------------------------------------------- train_step
def make_trainer(
    arm: str,
    width: float,
    precision: str,
    device: str,
    compile: bool,
    data: Dataset,
    batch_size: int = 128,
) -> Trainer:
    cfg = load_config(
        None,
        overrides=[
            f"name=bench-{arm}",
            f"device={device}",
            f"model.width={width}",
            f"train.batch_size={batch_size}",
            f"train.precision={precision}",
            f"train.compile={'true' if compile else 'false'}",
            "train.monitor_batches=0",
        ],
        arm=arm,
    )
    return Trainer(cfg, None, data=data, quiet=True)


class StepFn:
    """One ``Trainer.train_step`` per call, with the buffers ``Trainer.run_epoch`` passes; like
    ``run_epoch``, no host sync per step (:meth:`check` looks at the losses afterwards)."""

    def __init__(self, tr: Trainer, n: int = 64) -> None:
        self.tr, self.n, self.i = tr, n, 0
        self.buf = torch.zeros(n, 1 + len(tr.layers), device=tr.device)
        self.correct = torch.zeros((), dtype=torch.long, device=tr.device)
        tr.net.train()

    def __call__(self) -> None:
        self.tr.train_step(self.i % self.n, self.buf, self.correct)
        self.i += 1

    def check(self) -> None:
        if not bool(torch.isfinite(self.buf).all()):
            raise RuntimeError(f"non-finite loss in a benchmark step of {self.tr.cfg.name}")


def step_fn(tr: Trainer) -> StepFn:
    return StepFn(tr)


def bench_train_step(ctx: dict[str, Any], rec: Recorder) -> None:
    a = ctx["args"]
    dev = ctx["device"]
    data = random_dataset(4096 if not a.smoke else 512, 16)
    width = a.width
    batch = 32 if a.smoke else 128
    rounds = a.rounds or (2 if a.smoke else 5)
    warmup = 1 if a.smoke else 2
    # A CPU step takes seconds: one per timing. A GPU step takes milliseconds: time 20 in a row.
    steps = 1 if dev.type == "cpu" or a.smoke else 20
    precisions = ["fp32", "bf16"]
    configs: list[tuple[str, bool]] = [(p, False) for p in precisions]
    if ctx["compile"]:  # the compiled whole step at precision auto (what presets use)
        configs.append((resolve_precision("auto", dev), True))
    for precision, compiled in configs:
        label = f"train_step {precision}{' compiled' if compiled else ''} width {width}"
        log(f"{label}: building baseline and DAI trainers")
        trainers = {
            arm: make_trainer(arm, width, precision, a.device, compiled, data, batch)
            for arm in ("baseline", "dai")
        }
        fns = {arm: step_fn(tr) for arm, tr in trainers.items()}
        compile_s: dict[str, float] = {}
        if compiled:
            try:
                for arm, fn in fns.items():
                    log(f"{label}: compiling {arm} (torch.compile, inductor) ...")
                    t0 = time.perf_counter()
                    fn()
                    sync(dev)
                    compile_s[arm] = time.perf_counter() - t0
                    log(f"{label}: {arm} first step (compile) {compile_s[arm]:.1f} s")
            except Exception as e:  # noqa: BLE001 - record why, go on with the rest
                log(f"{label}: torch.compile failed: {type(e).__name__}: {e}")
                rec(
                    "train_step",
                    variant="torch.compile (inductor), train.compile=true",
                    precision=precision,
                    compile=True,
                    width=width,
                    error=f"torch.compile failed: {type(e).__name__}: {e}",
                )
                continue
        log(f"{label}: warm-up {warmup} step(s) each, then {rounds} interleaved rounds")
        t = interleaved(fns, dev, rounds, steps, warmup, label, progress=True)
        for fn in fns.values():
            fn.check()
        b = trainers["dai"].cfg.train.batch_size
        base, dai = median(t["baseline"]), median(t["dai"])
        paired = median([d / s - 1 for d, s in zip(t["dai"], t["baseline"])])
        overhead = dai / base - 1
        target = TARGET_OVERHEAD.get(dev.type)
        applies = dev.type == "cuda" or precision == "bf16"
        fields: dict[str, Any] = {
            "variant": "torch.compile (inductor), train.compile=true" if compiled else "eager",
            "precision": precision,
            "compile": compiled,
            "model": "allcnnc",
            "width": width,
            "batch_size": b,
            "baseline": {"views": 1, "alpha": 0.0, "taps": 0},
            "dai": {
                "views": trainers["dai"].views,
                "alpha": trainers["dai"].cfg.train.alpha,
                "taps": len(trainers["dai"].layers),
            },
            "channels_last": trainers["dai"].cfg.train.channels_last,
            "rounds": rounds,
            "steps_per_round": steps,
            "warmup_steps": warmup,
            "baseline_step_ms": base * 1e3,
            "dai_step_ms": dai * 1e3,
            "baseline_step_ms_spread": {k: v * 1e3 for k, v in spread(t["baseline"]).items()},
            "dai_step_ms_spread": {k: v * 1e3 for k, v in spread(t["dai"]).items()},
            "baseline_samples_per_s": b / base,
            "dai_samples_per_s": b / dai,
            "dai_overhead": overhead,
            "dai_overhead_paired_median": paired,
            "target_max_overhead": target,
            "target_applies": applies,
            "meets_target": (overhead <= target) if (target is not None and applies) else None,
        }
        if compiled:
            fields["compile_s"] = compile_s
        rec("train_step", **fields)
        ctx["train_sps"][(precision, compiled)] = {"baseline": b / base, "dai": b / dai}
        del trainers, fns


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
def bench_augment(ctx: dict[str, Any], rec: Recorder) -> None:
    a = ctx["args"]
    dev = ctx["device"]
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

    precision = resolve_precision("auto", dev)
    train = ctx["train_sps"].get((precision, False))
    source = f"train_step bench of this run ({precision}, eager, width {a.width})"
    if train is None:
        log(f"augment: no train_step result in this run; timing DAI train steps ({precision}) for the ratio")
        data = random_dataset(512, 16)
        tr = make_trainer("dai", a.width, precision, a.device, False, data, 32 if a.smoke else 128)
        fn = step_fn(tr)
        steps = interleaved({"dai": fn}, dev, 2 if a.smoke else 3, 1, warmup=1)["dai"]
        fn.check()
        train = {"dai": tr.cfg.train.batch_size / median(steps)}
        source = f"measured here: DAI train steps ({precision}, eager, width {a.width})"
    # The stricter ratio: against the faster training arm measured.
    arm = max(train, key=train.get)
    ratio = sps_b / train[arm]
    rec(
        "augment",
        scheme="heavier",
        interpolation=interp,
        batch_size=n,
        what="sample_params + apply on float images already on the device",
        rounds=rounds,
        calls_per_round=inner,
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


# --------------------------------------------------------------------------------- evaluate
def make_checkpoint(run_dir: Path, width: float, device: str, smoke: bool = False) -> Path:
    """A DAI run's checkpoint after 2 steps: evaluation cost does not depend on training.

    The evaluation protocol is the default one (eval.transforms=5, eval.tta_views=10), except
    under ``--smoke`` (2 and 2)."""
    toy = ["eval.transforms=2", "eval.tta_views=2"] if smoke else []
    cfg = load_config(
        None,
        overrides=[
            "name=bench-eval",
            f"device={device}",
            f"model.width={width}",
            "data.n_train=256",
            "train.batch_size=32",
            "train.monitor_batches=0",
            "train.precision=auto",
            *toy,
        ],
        arm="dai",
    )
    tr = Trainer(cfg, run_dir, data=random_dataset(256, 16, seed=1), quiet=True)
    fn = step_fn(tr)
    for _ in range(2):  # move the BN running statistics off their initial values
        fn()
    fn.check()
    tr.save_checkpoint(final=True)
    return run_dir / "checkpoints" / "final.pt"


def bare_forwards(ck: Path, dev: torch.device, n: int) -> tuple[Callable[[], None], dict[str, Any]]:
    """The forward passes evaluate() makes, with its batch sizes: no taps, augmentation or meter."""
    from dainv.evaluate import load_checkpoint

    model, cfg, _ = load_checkpoint(ck, dev)
    ec = cfg.eval
    precision = resolve_precision(cfg.train.precision, dev)
    bs, t_count, tta = ec.batch_size, ec.transforms, ec.tta_views
    bs2 = max(1, bs // (t_count + 1))
    buf = torch.rand(max(min(bs, n), min(bs2, n) * (t_count + 1)), 3, 32, 32, device=dev)

    @torch.no_grad()
    def fn() -> None:
        with autocast(dev, precision):
            for i in range(0, n, bs):  # pass 1: originals + TTA views
                b = min(bs, n - i)
                for _ in range(1 + tta):
                    model(buf[:b])
            for i in range(0, n, bs2):  # pass 2: originals and their T transformations together
                b = min(bs2, n - i)
                model(buf[: b * (1 + t_count)])

    info = {
        "batch_size": bs,
        "pass2_batch_size": bs2,
        "transforms": t_count,
        "tta_views": tta,
        "precision": precision,
        "forward_images": n * (1 + tta) + n * (1 + t_count),
    }
    return fn, info


def bench_evaluate(ctx: dict[str, Any], rec: Recorder) -> None:
    from dainv.evaluate import evaluate

    a = ctx["args"]
    dev = ctx["device"]
    n = 64 if a.smoke else a.eval_n
    width = 0.125 if a.smoke else a.eval_width
    rounds = a.eval_rounds or (1 if a.smoke else 2)
    mem_ns = (16, 64) if a.smoke else (max(1, a.eval_n // 5), a.eval_n)
    with tempfile.TemporaryDirectory(prefix="dainv-bench-") as tmp:
        ck = make_checkpoint(Path(tmp) / "run", width, a.device, a.smoke)
        data = random_dataset(256, n, seed=2)
        bare, info = bare_forwards(ck, dev, n)
        walls: list[float] = []

        def full() -> None:
            s = evaluate(ck, data=data, device=a.device, n_test=n, quiet=True, write=False)
            walls.append(s["wall_time_s"])

        log(
            f"evaluate: N={n}, width {width}, {info['forward_images']} forward images per call; "
            f"{rounds} interleaved round(s) of evaluate and bare forwards"
            f"{'' if a.smoke else ' after a warm-up on one batch'}"
        )
        if not a.smoke:
            warm_n = min(n, info["batch_size"])
            evaluate(ck, data=data, device=a.device, n_test=warm_n, quiet=True, write=False)
        t = interleaved({"evaluate": full, "bare_forwards": bare}, dev, rounds, 1, 0, "evaluate", True)
        ev, fw = median(t["evaluate"]), median(t["bare_forwards"])
        ratio = ev / fw
        note = "smoke: toy size and toy protocol (2 transforms, 2 TTA views)" if a.smoke else None
        if not a.smoke and width < 1:
            note = (
                f"model width {width}, not 1: full width on {n}×{1 + info['tta_views'] + 1 + info['transforms']} "
                "forward passes is far too slow for a 2-core CPU; the ratio measures the overhead "
                "(taps, augmentation, meter) around the forward passes"
            )
        rec(
            "evaluate",
            n_test=n,
            width=width,
            layers="all (input, conv1..conv9)",
            **info,
            rounds=rounds,
            evaluate_s=ev,
            evaluate_internal_wall_s=median(walls),
            bare_forwards_s=fw,
            evaluate_s_spread=spread(t["evaluate"]),
            bare_forwards_s_spread=spread(t["bare_forwards"]),
            evaluate_over_forwards=ratio,
            target_max_ratio=TARGET_EVAL_RATIO,
            meets_target=ratio <= TARGET_EVAL_RATIO,
            note=note,
        )

        mems = []
        for mn in mem_ns:
            log(f"evaluate_memory: N={mn} in a fresh process ...")
            spec = {"checkpoint": str(ck), "n": mn, "device": a.device, "threads": torch.get_num_threads()}
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--child-eval-memory", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"evaluate memory child (N={mn}) failed:\n{proc.stderr[-4000:]}")
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            data_mb = mn * 3 * 32 * 32 / 2**20
            r = rec(
                "evaluate_memory",
                n_test=mn,
                width=width,
                what="ru_maxrss of a fresh process that builds an N-image test set and runs evaluate()",
                maxrss_mb=child["maxrss_mb"],
                maxrss_before_evaluate_mb=child["maxrss_before_mb"],
                rss_before_evaluate_mb=child["rss_before_mb"],
                evaluate_peak_increase_mb=(
                    child["maxrss_mb"] - child["rss_before_mb"] if child["rss_before_mb"] else None
                ),
                test_set_mb=data_mb,
                maxrss_minus_test_set_mb=child["maxrss_mb"] - data_mb,
                evaluate_wall_s=child["wall_s"],
                **({"cuda_max_allocated_mb": child["cuda_max_allocated_mb"]} if "cuda_max_allocated_mb" in child else {}),
            )
            mems.append(r)
        lo, hi = mems[0], mems[-1]
        growth = hi["maxrss_mb"] - lo["maxrss_mb"]
        data_growth = hi["test_set_mb"] - lo["test_set_mb"]
        inc = (lo["evaluate_peak_increase_mb"], hi["evaluate_peak_increase_mb"])
        rec(
            "evaluate_memory_scaling",
            n_small=lo["n_test"],
            n_large=hi["n_test"],
            width=width,
            maxrss_growth_mb=growth,
            evaluate_peak_increase_growth_mb=None if None in inc else inc[1] - inc[0],
            test_set_growth_mb=data_growth,
            excess_growth_mb=growth - data_growth,
            excess_kb_per_image=(growth - data_growth) * 1024 / (hi["n_test"] - lo["n_test"]),
            note="memory independent of N: the peak grows by the test set itself (uint8) plus "
            "O(N·T) scores per layer, never by N×D activations",
        )


def current_rss_mb() -> float | None:
    """Resident set size now (Linux /proc), in MiB."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def child_eval_memory(spec_json: str) -> None:
    """Run in a fresh process: build the data, run evaluate(), print peak RSS as JSON."""
    from dainv.evaluate import evaluate

    spec = json.loads(spec_json)
    torch.set_num_threads(int(spec["threads"]))
    n = int(spec["n"])
    data = random_dataset(256, n, seed=2)
    dev = resolve_device(spec["device"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    evaluate(Path(spec["checkpoint"]), data=data, device=spec["device"], n_test=n, quiet=True, write=False)
    out = {
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "maxrss_before_mb": before,
        "rss_before_mb": rss_before,
        "wall_s": time.perf_counter() - t0,
    }
    if dev.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out), flush=True)


# --------------------------------------------------------------------------------- main
RUNNERS = {
    "ops": bench_ops,
    "gpu": bench_gpu,
    "train_step": bench_train_step,
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
