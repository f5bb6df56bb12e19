"""torchrun DDP on CPU (gloo, 2 processes) at toy scale, on a synthetic npz data set: one run
folder, resumable; the global batch split over ranks; a NaN on one rank stops every rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

# Rank 1 alone gets a NaN cross-entropy at its 2nd call; rank 0 must not wait for it forever.
NAN_ON_RANK_1 = """
import os, sys
import dainv.train as tr
if os.environ["RANK"] == "1":
    orig, n = tr.F.cross_entropy, [0]
    def ce(*a, **k):
        n[0] += 1
        return orig(*a, **k) * float("nan") if n[0] == 2 else orig(*a, **k)
    tr.F.cross_entropy = ce
from dainv.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "dainv", "train", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def sets(tiny_overrides, random_npz):
    """The tiny run's settings on the synthetic data (256 training images), as --set options."""
    return [a for o in [*tiny_overrides, f"data.dataset=npz:{random_npz}"] for a in ("--set", o)]


@pytest.mark.slow  # torchrun with two gloo processes and a resume: ~14 s
def test_torchrun_gloo_two_processes_global_batch_and_resume(tmp_path, sets):
    run = tmp_path / "ddp"
    r = _torchrun([*sets, "--arm", "dai", "--epochs", "1", "--out", str(run), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    # train.batch_size = 128 is the GLOBAL batch: 8 seeds × 8 views = 64 samples on each rank.
    assert "8 seeds × 8 views = 64 samples per step on each of 2 ranks (global batch 128)" in r.stderr
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["status"] == "finished" and meta["batch_per_rank"] == 64
    ck = torch.load(run / "checkpoints" / "final.pt", weights_only=False)
    assert len(ck["aug_generators"]) == 2
    assert not torch.equal(ck["aug_generators"][0], ck["aug_generators"][1])  # per-rank streams
    # steps per epoch = ceil(256 / 128) = 2, the same as on one process
    assert ck["step"] == 2
    assert not any(p.name.startswith("ddp") and p != run for p in tmp_path.iterdir())  # one folder

    # Extend the finished run by raising train.epochs in its config.yaml, under torchrun.
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["train"]["epochs"] = 2
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = _torchrun(["--resume", str(run), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [1, 2]
    assert torch.load(run / "checkpoints" / "final.pt", weights_only=False)["step"] == 4
    assert [e["to"] for e in json.loads((run / "meta.json").read_text())["extended"]] == [2]


@pytest.mark.parametrize("rank", [0, 1])
def test_global_batch_that_does_not_split_is_refused(tmp_path, sets, monkeypatch, capsys, rank):
    """Each rank refuses before the process group starts, so one rank in this process (torchrun's
    environment: RANK, WORLD_SIZE) shows what every rank does: exit 2, the message, no traceback."""
    from dainv.cli import main

    for key, value in {"RANK": rank, "LOCAL_RANK": rank, "WORLD_SIZE": 2}.items():
        monkeypatch.setenv(key, str(value))
    rc = main(["train", *sets, "--set", "train.batch_size=120", "--arm", "dai", "--out", str(tmp_path / "x"), "--quiet"])
    assert rc == 2 and "global batch 120 must split into 2 process(es) × 8 views" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_nan_on_one_rank_stops_all_ranks(tmp_path, sets):
    """The two ranks started as torchrun starts them (its environment, without the launcher, which
    would end a rank left waiting): each stops by itself."""
    script = tmp_path / "nan_rank1.py"
    script.write_text(NAN_ON_RANK_1)
    run = tmp_path / "nan"
    args = [*sets, "--set", "train.log_every=1", "--set", "train.monitor_batches=0", "--arm", "dai", "--out", str(run), "--quiet"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}  # fmt: skip
        ranks.append(subprocess.Popen([sys.executable, str(script), "train", *args], env=env, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))  # fmt: skip
    try:
        err = [p.communicate(timeout=120)[1] for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode != 0 for p in ranks), err
    assert "non-finite on another process at epoch 1" in err[0]  # rank 0 stopped too
    assert "cross-entropy (CE) became nan at epoch 1, step 2 of 2" in err[1]  # rank 1 names it
    assert json.loads((run / "meta.json").read_text())["status"] == "failed"
