"""The ``evaluate`` benchmarks: ``dainv evaluate`` against its bare forward passes, and its peak
memory in a fresh process (``run.py --child-eval-memory``) for two test-set sizes."""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_common import Recorder, interleaved, log, median, spread, step_fn

from dainv.config import from_dict, load_config
from dainv.data import random_dataset
from dainv.runtime import autocast, resolve_device, resolve_precision
from dainv.train import Trainer

TARGET_EVAL_RATIO = 1.25  # evaluate wall time ≤ 1.25 × its forward passes
RUN_PY = Path(__file__).resolve().parent / "run.py"


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
    from dainv.checkpoint import build_from_checkpoint, load_checkpoint

    state = load_checkpoint(ck)
    model, cfg = build_from_checkpoint(state, dev), from_dict(state["config"])
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


def _eval_sizes(a: Any) -> tuple[int, float, int, tuple[int, int]]:
    """(N, model width, rounds, the two memory-test sizes) from the command line."""
    n = 64 if a.smoke else a.eval_n
    width = 0.125 if a.smoke else a.eval_width
    rounds = a.eval_rounds or (1 if a.smoke else 2)
    mem_ns = (16, 64) if a.smoke else (max(1, a.eval_n // 5), a.eval_n)
    return n, width, rounds, mem_ns


def _time_evaluate(
    a: Any, dev: torch.device, ck: Path, n: int, width: float, rounds: int
) -> tuple[dict[str, list[float]], list[float], dict[str, Any]]:
    """evaluate() and its bare forward passes, interleaved: (timings, evaluate's own walls, info)."""
    from dainv.evaluate import evaluate

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
    t = interleaved({"evaluate": full, "bare_forwards": bare}, dev, rounds, 1, warmup=0, label="evaluate", progress=True)
    return t, walls, info


def _evaluate_note(smoke: bool, width: float, n: int, info: dict[str, Any]) -> str | None:
    if smoke:
        return "smoke: toy size and toy protocol (2 transforms, 2 TTA views)"
    if width < 1:
        return (
            f"model width {width}, not 1: full width on {n}×{1 + info['tta_views'] + 1 + info['transforms']} "
            "forward passes is far too slow for a 2-core CPU; the ratio measures the overhead "
            "(taps, augmentation, meter) around the forward passes"
        )
    return None


def _record_evaluate(
    rec: Recorder, a: Any, t: dict[str, list[float]], walls: list[float], info: dict[str, Any],
    *, n: int, width: float, rounds: int,
) -> None:  # fmt: skip
    ev, fw = median(t["evaluate"]), median(t["bare_forwards"])
    ratio = ev / fw
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
        note=_evaluate_note(a.smoke, width, n, info),
    )


def _memory_child(ck: Path, n: int, device: str) -> dict[str, Any]:
    """``run.py --child-eval-memory`` on N test images: the child's JSON line."""
    log(f"evaluate_memory: N={n} in a fresh process ...")
    spec = {"checkpoint": str(ck), "n": n, "device": device, "threads": torch.get_num_threads()}
    proc = subprocess.run(
        [sys.executable, str(RUN_PY), "--child-eval-memory", json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"evaluate memory child (N={n}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _record_memory(rec: Recorder, child: dict[str, Any], n: int, width: float) -> dict[str, Any]:
    data_mb = n * 3 * 32 * 32 / 2**20
    return rec(
        "evaluate_memory",
        n_test=n,
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


def _record_memory_scaling(rec: Recorder, lo: dict[str, Any], hi: dict[str, Any], width: float) -> None:
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


def bench_evaluate(ctx: dict[str, Any], rec: Recorder) -> None:
    """``evaluate`` against its bare forward passes, then its peak memory for two test-set sizes."""
    a = ctx["args"]
    n, width, rounds, mem_ns = _eval_sizes(a)
    with tempfile.TemporaryDirectory(prefix="dainv-bench-") as tmp:
        ck = make_checkpoint(Path(tmp) / "run", width, a.device, a.smoke)
        t, walls, info = _time_evaluate(a, ctx["device"], ck, n, width, rounds)
        _record_evaluate(rec, a, t, walls, info, n=n, width=width, rounds=rounds)
        mems = [_record_memory(rec, _memory_child(ck, mn, a.device), mn, width) for mn in mem_ns]
        _record_memory_scaling(rec, mems[0], mems[-1], width)


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


