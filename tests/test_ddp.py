"""torchrun DDP on CPU (gloo, 2 processes) at toy scale: one run folder, resumable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY, cifar_root


def _torchrun(args, timeout=300):
    env = {**os.environ, "DAINV_DATA": str(cifar_root()), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dainv", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_torchrun_gloo_two_processes_and_resume(tmp_path, cifar10):
    run = tmp_path / "ddp"
    sets = [a for o in TINY for a in ("--set", o)]
    r = _torchrun([*sets, "--arm", "dai", "--epochs", "1", "--out", str(run), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on each of 2 ranks" in r.stderr
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["status"] == "finished"
    ck = torch.load(run / "checkpoints" / "final.pt", weights_only=False)
    assert len(ck["aug_generators"]) == 2
    assert not torch.equal(ck["aug_generators"][0], ck["aug_generators"][1])  # per-rank streams
    # steps per epoch = ceil(256 / (128 × 2)) = 1
    assert ck["step"] == 1
    assert not any(p.name.startswith("ddp") and p != run for p in tmp_path.iterdir())  # one folder

    # Extend the finished run by resuming with more epochs is not allowed; interrupt-and-resume is:
    # mark it unfinished at epoch 1 of 2 and continue under torchrun.
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["epochs"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    meta["status"] = "interrupted"
    (run / "meta.json").write_text(json.dumps(meta))
    r = _torchrun(["--resume", str(run), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1, 2]
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=False)["step"] == 2
