"""The benchmark harness: ``benchmarks/run.py --smoke`` end to end, its refusals (in process,
through its ``main``), and ``train.compile=true`` on CPU.

Both slow: the smoke run takes 25–45 s on 2 CPU cores (10 s of CPU on one thread); the compile
test up to ~60 s when inductor's cache is cold (a cold compile of All-CNN-C's training graph),
~15 s once it is warm.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import run as bench_run  # benchmarks/run.py (benchmarks/ is on sys.path: conftest)
import torch

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "benchmarks" / "run.py"
BENCH_NAMES = {
    "ops",
    "train_step",
    "denominator",
    "dai_loss",
    "augment",
    "evaluate",
    "evaluate_memory",
    "evaluate_memory_scaling",
}
# Measured numbers that must be > 0, per record kind (all numbers must be finite).
POSITIVE = {
    "ops": ["dai_over_baseline_ops", "dai_over_baseline_kernels", "control_over_baseline_kernels"],
    "train_step": [
        "baseline_step_ms",
        "dai_step_ms",
        "baseline_samples_per_s",
        "dai_samples_per_s",
    ],
    "denominator": ["all_step_ms", "same_class_step_ms", "same_class_over_all", "fused_kernels_ratio"],
    "dai_loss": ["D", "dai_loss_ms", "pairwise_ms", "pairwise_over_dai_loss"],
    "augment": [
        "batched_samples_per_s",
        "per_image_samples_per_s",
        "train_samples_per_s",
        "aug_over_train",
    ],
    "evaluate": ["forward_images", "evaluate_s", "bare_forwards_s", "evaluate_over_forwards"],
    "evaluate_memory": ["maxrss_mb", "test_set_mb", "evaluate_wall_s"],
    "evaluate_memory_scaling": ["n_small", "n_large"],
}


def _numbers(obj, path=""):
    """(path, value) of every int/float leaf of a JSON record (bools excluded)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-results")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, out


@pytest.mark.slow  # ~30 s: every benchmark at toy size, in its own process
def test_smoke_run_writes_valid_records(smoke_run):
    proc, out = smoke_run
    assert proc.returncode == 0, f"benchmarks/run.py --smoke failed:\n{proc.stderr[-5000:]}"
    lines = proc.stdout.splitlines()
    assert lines, "no records on stdout"
    records = [json.loads(line) for line in lines]  # every stdout line is one JSON record
    assert BENCH_NAMES.issubset({r["bench"] for r in records})
    for r in records:
        assert "error" not in r, r
        for key in ("machine", "device", "torch", "dainv", "git_commit", "time"):
            assert key in r, f"{r['bench']} record lacks {key!r}"
        assert {"cpu", "threads", "platform"} <= set(r["machine"])
        assert r["smoke"] is True
        for path, v in _numbers(r):
            assert math.isfinite(v), f"{r['bench']}.{path} = {v}"
        for key in POSITIVE[r["bench"]]:
            assert isinstance(r[key], (int, float)) and r[key] > 0, f"{r['bench']}.{key} = {r[key]!r}"

    # Both precisions of the train step, one dai_loss record per distinct layer size.
    steps = [r for r in records if r["bench"] == "train_step"]
    assert {r["precision"] for r in steps} == {"fp32", "bf16"}
    assert all(math.isfinite(r["dai_overhead"]) for r in steps)
    assert len({r["D"] for r in records if r["bench"] == "dai_loss"}) == 5
    assert len([r for r in records if r["bench"] == "evaluate_memory"]) == 2

    # The same records were appended to OUT/<UTC date>-<host>.jsonl.
    files = list(out.glob("*.jsonl"))
    assert len(files) == 1, files
    assert files[0].read_text().splitlines() == lines


def test_unknown_benchmark_name_is_refused(tmp_path, capsys):
    assert bench_run.main(["--only", "nope", "--out", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "unknown benchmark" in err and "train_step" in err
    assert out == "" and not list(tmp_path.iterdir())


def test_gpu_benchmark_refuses_cleanly_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    for args in (["--device", "cuda"], ["--only", "gpu"]):
        rc = bench_run.main([*args, "--out", str(tmp_path)])  # an exception here would be a traceback
        out, err = capsys.readouterr()
        assert rc == 2, err[-2000:]
        assert "CUDA" in err and "Traceback" not in err and out == ""


def test_operator_counts_of_a_training_step():
    """Issue 10.2: the eager DAI step may dispatch at most 1.5× the baseline step's kernels.
    No tensor from Python data and no host sync in any arm's step."""
    from bench_ops import count_step_ops, trainer_for

    from dainv.data import random_dataset

    data = random_dataset(64, 16)
    counts = {arm: count_step_ops(trainer_for(arm, data, 0.125, 32)) for arm in ("baseline", "dai", "control")}
    assert all(c["kernels"] > 0 for c in counts.values())
    assert counts["dai"]["kernels"] <= 1.5 * counts["baseline"]["kernels"], counts
    assert counts["control"]["kernels"] <= 1.5 * counts["baseline"]["kernels"], counts
    assert all(c["host"] == 0 for c in counts.values()), counts


def _no_inductor_reason() -> str | None:
    """Why torch.compile's CPU backend (inductor, which calls a C++ compiler) cannot run here."""
    try:
        from torch._inductor import cpp_builder

        cxx = cpp_builder.get_cpp_compiler()
    except Exception as e:  # noqa: BLE001 - any failure means: no inductor here
        return f"torch inductor is unavailable: {type(e).__name__}: {e}"
    if shutil.which(cxx) is None and not Path(cxx).is_file():
        return f"torch inductor needs a C++ compiler ({cxx}) on CPU; none is installed"
    return None


_NO_INDUCTOR = _no_inductor_reason()


def _random_data(n_train: int = 256, n_test: int = 128):
    from dainv.data import random_dataset

    return random_dataset(n_train, n_test)


@pytest.mark.slow  # torch.compile (inductor): ~15 s with a warm cache, ~60 s cold
@pytest.mark.skipif(_NO_INDUCTOR is not None, reason=_NO_INDUCTOR or "")
def test_compiled_train_steps_on_cpu(tiny):
    """train.compile=true (torch.compile, inductor): two DAI steps, finite losses, the same first
    loss as eager, and the weights move."""
    from dainv.train import Trainer

    data = _random_data()
    losses = {}
    for compiled in (False, True):
        cfg = tiny(
            "dai", "device=cpu", "train.batch_size=32", f"train.compile={str(compiled).lower()}"
        )
        tr = Trainer(cfg, None, data=data, quiet=True)
        # torch.compile's wrapper around the step's forward + loss (train.compile compiles the step)
        assert hasattr(tr._core, "_torchdynamo_orig_callable") == compiled
        w0 = tr.model.blocks[0][0].weight.detach().clone()
        buf = tr.step_buffer(2)
        correct = torch.zeros((), dtype=torch.long)
        tr.net.train()
        for step in range(2):
            tr.train_step(step, buf, correct)
        assert torch.isfinite(buf).all(), buf
        assert (buf[:, 0] > 0).all() and (buf[:, 1:] > 0).all()
        assert not torch.equal(tr.model.blocks[0][0].weight, w0)
        losses[compiled] = buf[0]
    # Step 1's losses come from the same weights and views: compiled == eager up to rounding.
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-4, atol=1e-5)
