"""Where a training step's time goes on a GPU, per arm (lent-GPU sessions; docs/performance.md).

For the baseline, control and DAI arms at the paper's size (All-CNN-C width 1, B = 128, fp32 with
TF32, eager): the wall time of each part of ``Trainer.train_step`` (views, forward + loss,
backward, SGD) timed with synchronisation, the step's GPU busy time against its wall time
(host-bound or GPU-bound), and the CUDA kernels that take the most time.

    PYTHONPATH=src python3 benchmarks/gpu_profile.py [--arms baseline,control,dai] [--width 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ops import trainer_for  # noqa: E402

from dainv.data import random_dataset  # noqa: E402


def _parts(tr, reps: int) -> dict[str, float]:
    """Median milliseconds of each part of a step, each part synchronised on its own."""
    times: dict[str, list[float]] = {"views": [], "forward+loss": [], "backward": [], "sgd": []}
    k = tr.seeds_per_step

    def timed(name, fn, *args):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args)
        torch.cuda.synchronize()
        times[name].append(1e3 * (time.perf_counter() - t0))
        return out

    for _ in range(reps):
        idx = tr.sampler.next(k)
        x, y = timed("views", tr.make_views, idx, tr.views, tr.gen)
        loss = timed("forward+loss", tr._core, x, y)[0]
        tr.opt.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("sgd", tr.opt.step)
    return {n: sorted(v)[len(v) // 2] for n, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", default="baseline,control,dai")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    data = random_dataset(8192, 16).to("cuda")
    for arm in a.arms.split(","):
        tr = trainer_for(arm, data, a.width, 128, "fp32", device="cuda", tf32=True)
        buf = tr.step_buffer(a.steps)
        correct = torch.zeros((), dtype=torch.long, device="cuda")
        tr.net.train()
        for s in range(5):
            tr.train_step(s, buf, correct)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(a.steps):
            tr.train_step(s, buf, correct)
        torch.cuda.synchronize()
        wall = 1e3 * (time.perf_counter() - t0) / a.steps
        parts = _parts(tr, a.steps)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for s in range(a.steps):
                tr.train_step(s, buf, correct)
            torch.cuda.synchronize()
        ev = prof.key_averages()
        gpu_ms = sum(e.self_device_time_total for e in ev) / 1e3 / a.steps
        print(f"\n### {arm}: {wall:.2f} ms/step wall, GPU busy {gpu_ms:.2f} ms/step; parts (ms, synced): "
              + ", ".join(f"{n} {v:.2f}" for n, v in parts.items()))
        print(ev.table(sort_by="self_device_time_total", row_limit=14, max_name_column_width=60))
        del tr
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
