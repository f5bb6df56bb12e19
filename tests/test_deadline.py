"""A clean deadline (``--time-limit``): training stops at a step boundary before it with a
complete checkpoint and exit status 75, and the same command goes on — bit for bit as if never
stopped, for ``train`` and for ``reproduce --parallel 2`` (CPU, fp32)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from dainv import cli
from dainv.data import random_dataset
from dainv.errors import TimeLimitReached
from dainv.reproduce import reproduce
from dainv.train import train

DATA = random_dataset(256, 128)
ARMS = ["baseline", "dai"]


def _weights(run):
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]


def _same_run(a, b):
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    drop = ("epoch_time_s", "samples_per_s", "load_avg")
    assert [{k: v for k, v in r.items() if k not in drop} for r in ma] == [
        {k: v for k, v in r.items() if k not in drop} for r in mb
    ]


@pytest.mark.parametrize("arm", ARMS)
def test_stopped_at_every_interval_then_resumed_equals_uninterrupted(tmp_path, tiny, arm):
    """A deadline already past stops each call after its first logging interval (a mid-epoch
    stop, then epoch ends): 8 stops in 2 epochs, each resumed, give the uninterrupted run."""
    cfg = tiny(arm, "train.batch_size=32", "data.n_train=128", "train.log_every=1", "train.milestones=[1]")
    train(cfg, tmp_path / "whole", quiet=True, data=DATA)
    run, stops = tmp_path / "cut", 0
    for call in range(20):
        try:
            train(cfg if call == 0 else None, run, resume=call > 0, quiet=True, data=DATA, deadline=time.monotonic())
            break
        except TimeLimitReached as e:
            stops += 1
            assert "checkpoints/last.pt is complete" in str(e) and e.exit_code == 75
            assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert stops == 7  # a stop after each of the 4 steps of 2 epochs but the last, which ends the run
    _same_run(run, tmp_path / "whole")


def test_train_cli_time_limit_exit_status(tmp_path, random_npz, tiny_overrides, capsys):
    args = ["train", "--arm", "dai", "--out", str(tmp_path / "r"), "--quiet",
            *[a for kv in [*tiny_overrides, f"data.dataset=npz:{random_npz}"] for a in ("--set", kv)]]  # fmt: skip
    # the limit counts from the command's start (here: when the CLI was imported, long ago)
    assert cli.main([*args, "--time-limit", "0.5"]) == 75
    err = capsys.readouterr().err
    assert "dainv: stopped before the time limit" in err and "dainv train --resume" in err
    assert "error" not in err.splitlines()[-1]
    assert (tmp_path / "r" / "checkpoints" / "last.pt").is_file()
    assert cli.main(["train", "--resume", str(tmp_path / "r"), "--quiet"]) == 0


@pytest.mark.parametrize("bad", ["0", "-3", "soon", "inf"])
def test_time_limit_must_be_positive_seconds(bad, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--arm", "dai", "--time-limit", bad])
    assert e.value.code == 2 and "number of seconds > 0" in capsys.readouterr().err


@pytest.mark.slow  # four reproductions of two tiny arms, two of them as processes: ~40 s
def test_reproduce_parallel_stopped_by_the_limit_then_resumed_equals_uninterrupted(tmp_path, random_npz, tiny_overrides, monkeypatch):
    monkeypatch.setattr("dainv.report.build_report", lambda folder: folder / "report.md")
    sets = [*tiny_overrides, f"data.dataset=npz:{random_npz}", "data.n_train=128", "train.batch_size=32",
            "data.n_test=32", "eval.batch_size=32", "eval.tta_views=2", "train.keep_epochs=[]", "device=cpu"]  # fmt: skip
    reproduce("quick", tmp_path / "whole", arms=ARMS, overrides=sets, quiet=True)
    out = tmp_path / "cut"
    with pytest.raises(TimeLimitReached, match="saved a resumable checkpoint"):
        reproduce("quick", out, arms=ARMS, overrides=sets, quiet=True, parallel=2, deadline=time.monotonic())
    for arm in ARMS:
        assert json.loads((out / f"{arm}-s0" / "meta.json").read_text())["status"] == "interrupted"
        assert not (out / f"{arm}-s0" / "eval").exists()
    reproduce("quick", out, arms=ARMS, overrides=sets, quiet=True, parallel=2)
    for arm in ARMS:
        _same_run(out / f"{arm}-s0", tmp_path / "whole" / f"{arm}-s0")


def test_no_evaluation_starts_after_the_deadline(tmp_path, random_npz, tiny_overrides, monkeypatch):
    """Training complete, the time gone: reproduce stops before evaluating (exit 75), and the
    same command without a limit evaluates."""
    monkeypatch.setattr("dainv.report.build_report", lambda folder: folder / "report.md")
    sets = [*tiny_overrides, f"data.dataset=npz:{random_npz}", "data.n_train=64", "train.batch_size=32", "train.epochs=1",
            "data.n_test=32", "eval.batch_size=32", "eval.tta_views=2", "train.keep_epochs=[]", "device=cpu"]  # fmt: skip
    out = tmp_path / "q"
    reproduce("quick", out, arms=["baseline"], overrides=sets, quiet=True)  # trained and evaluated
    (out / "baseline-s0" / "eval" / "summary.json").unlink()
    with pytest.raises(TimeLimitReached, match="evaluations remain"):
        reproduce("quick", out, arms=["baseline"], overrides=sets, quiet=True, deadline=time.monotonic() - 1)
    reproduce("quick", out, arms=["baseline"], overrides=sets, quiet=True)
    assert (out / "baseline-s0" / "eval" / "summary.json").is_file()
