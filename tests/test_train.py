"""Training at a tiny scale: outputs end to end on real CIFAR-10 (slow); resume, faults and the
sampler on synthetic data."""

from __future__ import annotations

import dataclasses
import json
import signal

import pytest
import torch

from dainv import runio
from dainv.config import validate
from dainv.errors import ConfigError, RunError
from dainv.train import NonFiniteLoss, SeedSampler, Trainer, train

TIME_KEYS = {"epoch_time_s", "samples_per_s", "load_avg", "cpu_count"}


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("arm", ["baseline", "dai", "control"])
def test_train_writes_run_folder(tmp_path, cifar10, tiny, arm, capsys):
    run = tmp_path / arm
    trainer = train(tiny(arm), run, quiet=True, data=cifar10)
    for f in ("config.yaml", "meta.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/final.pt"):
        assert (run / f).is_file(), f
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["finished"] and meta["torch"] == torch.__version__
    assert meta["device"] == "cpu" and "git_commit" in meta and meta["wall_time_s"] > 0
    recs = _metrics(run)
    assert [r["epoch"] for r in recs] == [1, 2]
    layers = [f"conv{i}" for i in range(1, 10)]
    for r in recs:
        assert set(r["dai"]) == set(layers) and set(r["dai_monitor"]) == set(layers)
        values = [r["train_ce"], r["train_loss"], r["test_acc"], *r["dai"].values()]
        assert all(v == v and abs(v) < 1e3 for v in values)  # finite
        assert 0 < r["dai"]["conv1"] < 2
    assert recs[0]["lr"] == 0.01 and recs[1]["lr"] == pytest.approx(0.001)  # milestone [1]
    assert trainer.steps_per_epoch == 2  # ceil(256 / 128) for every arm
    err = capsys.readouterr().err
    k, m = (128, 1) if arm == "baseline" else (16, 8)
    assert f"{k} seeds × {m} views = 128 samples per step" in err
    if arm == "dai":
        assert recs[0]["train_loss"] != recs[0]["train_ce"]
    else:
        assert recs[0]["train_loss"] == recs[0]["train_ce"]


def test_same_initial_weights_whatever_the_arm(random_data, tiny):
    a = Trainer(tiny("baseline"), None, data=random_data).model.state_dict()
    b = Trainer(tiny("dai"), None, data=random_data).model.state_dict()
    c = Trainer(tiny("dai", seed=1), None, data=random_data).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.0.weight"], c["blocks.0.0.weight"])


def _interrupt_at(monkeypatch, global_step):
    orig = Trainer.train_step

    def step(self, *args):
        orig(self, *args)
        if self.step + 1 == global_step:  # self.step counts completed steps before this one
            self._stop_signal = signal.SIGINT

    monkeypatch.setattr(Trainer, "train_step", step)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, random_data, tiny):
    """(config, folder) of a 3-epoch DAI run trained without a stop: the reference (read only)."""
    cfg = tiny("dai", "train.epochs=3", "train.log_every=1")
    ref = tmp_path_factory.mktemp("ref") / "ref"
    train(cfg, ref, quiet=True, data=random_data)
    return cfg, ref


@pytest.mark.parametrize("stop_step", [2, 3])  # 2: at an epoch end; 3: mid-epoch
def test_resume_is_bitwise_identical(tmp_path, random_data, uninterrupted, monkeypatch, stop_step):
    cfg, ref = uninterrupted
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at(m, stop_step)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run, quiet=True, data=random_data)
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    assert not (run / "checkpoints" / "final.pt").exists()
    with pytest.raises(RunError, match="already holds a run.*--resume"):
        train(cfg, run, quiet=True, data=random_data)
    train(None, run, resume=True, quiet=True, data=random_data)
    wa, wb = _weights(ref / "checkpoints/final.pt"), _weights(run / "checkpoints/final.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = _metrics(ref), _metrics(run)
    assert [r["epoch"] for r in mb] == [1, 2, 3]
    for ra, rb in zip(ma, mb):
        assert {k: v for k, v in ra.items() if k not in TIME_KEYS} == {
            k: v for k, v in rb.items() if k not in TIME_KEYS
        }
    with pytest.raises(RunError, match="already finished"):
        train(None, run, resume=True, quiet=True, data=random_data)


def test_finished_run_is_not_overwritten(tmp_path, random_data, tiny):
    run = tmp_path / "r"
    train(tiny("baseline", "train.epochs=1"), run, quiet=True, data=random_data)
    before = (run / "checkpoints/final.pt").read_bytes()
    with pytest.raises(RunError, match="is finished.*--force"):
        train(tiny("baseline", "train.epochs=1"), run, quiet=True, data=random_data)
    assert (run / "checkpoints/final.pt").read_bytes() == before
    train(tiny("baseline", "train.epochs=1", seed=3), run, quiet=True, data=random_data, force=True)
    assert (run / "checkpoints/final.pt").read_bytes() != before


def test_a_run_start_validates_once_and_before_the_folder(tmp_path, random_data, tiny, monkeypatch):
    import dainv.train

    calls = []
    monkeypatch.setattr(dainv.train, "validate", lambda cfg: calls.append(cfg) or validate(cfg))
    run = tmp_path / "r"
    train(tiny("baseline", "train.epochs=1"), run, quiet=True, data=random_data)
    assert len(calls) == 1
    before = (run / "checkpoints/final.pt").read_bytes()
    bad = tiny("baseline", "train.epochs=1")
    bad = dataclasses.replace(bad, train=dataclasses.replace(bad.train, lr=-1.0))
    with pytest.raises(ConfigError, match="invalid setting train.lr"):
        train(bad, run, quiet=True, data=random_data, force=True)
    assert (run / "checkpoints/final.pt").read_bytes() == before  # the old run was not moved aside
    with pytest.raises(ConfigError, match="invalid setting train.epochs"):
        train(None, run, resume=True, quiet=True, data=random_data, extend_epochs=10**6)
    assert len(calls) == 3


@pytest.mark.parametrize("term", ["ce", "conv4"])
def test_non_finite_loss_names_epoch_step_and_term(tmp_path, random_data, tiny, monkeypatch, term):
    import dainv.train as tr

    calls = {"n": 0}
    if term == "ce":
        orig = tr.F.cross_entropy

        def bad_ce(*a, **k):
            calls["n"] += 1
            out = orig(*a, **k)
            return out * float("nan") if calls["n"] == 3 else out

        monkeypatch.setattr(tr.F, "cross_entropy", bad_ce)
    else:
        orig = tr.DAILoss.forward

        def bad_dai(self, *a, **k):
            calls["n"] += 1
            loss, parts = orig(self, *a, **k)
            if calls["n"] == 3:  # step 3 (epoch 2, step 1), layer conv4
                both = parts["dai_both"].clone()  # [all pairs; same class] × layers
                both[0, 3] = float("inf")
                parts = {**parts, "dai_both": both}
            return loss, parts

        monkeypatch.setattr(tr.DAILoss, "forward", bad_dai)
    run = tmp_path / "nan"
    cfg = tiny("dai", "train.log_every=1", "train.monitor_batches=0")
    with pytest.raises(NonFiniteLoss) as e:
        train(cfg, run, quiet=True, data=random_data)
    msg = str(e.value)
    assert "epoch 2, step 1 of 2" in msg
    assert ("cross-entropy" in msg) if term == "ce" else ("layer conv4" in msg)
    # The last good checkpoint (epoch 1) is kept and metrics hold epoch 1 only.
    assert torch.load(run / "checkpoints/last.pt", weights_only=False)["epoch"] == 1
    assert [r["epoch"] for r in _metrics(run)] == [1]
    assert json.loads((run / "meta.json").read_text())["status"] == "failed"


def test_seed_sampler_continues_across_epochs_and_resumes():
    s = SeedSampler(10, seed=0, device=torch.device("cpu"))
    first = torch.cat([s.next(4) for _ in range(5)])  # 20 draws = 2 passes
    assert sorted(first[:10].tolist()) == list(range(10))
    assert sorted(first[10:].tolist()) == list(range(10))
    assert not torch.equal(first[:10], first[10:])  # a new permutation per pass
    s2 = SeedSampler(10, seed=0, device=torch.device("cpu"))
    s2.next(7)
    state = s2.state_dict()
    s3 = SeedSampler(10, seed=0, device=torch.device("cpu"))
    s3.load_state_dict(state)
    assert torch.equal(s3.next(9), first[7:16])


def _stop_in_last_step(m, cfg):
    _interrupt_at(m, cfg.train.epochs * 2)  # 256 images / 128 per step: 2 steps per epoch


def _stop_while_saving_final(m, cfg):
    orig = Trainer.save_checkpoint

    def save(self, final=False):
        if final:  # the signal arrives while final.pt is being written
            self._stop_signal = signal.SIGTERM
        orig(self, final)

    m.setattr(Trainer, "save_checkpoint", save)


@pytest.mark.parametrize("stop", [_stop_in_last_step, _stop_while_saving_final])
def test_a_stop_at_the_runs_end_is_not_ignored(tmp_path, random_data, tiny, monkeypatch, capsys, stop):
    """Issue 20: a stop in the last step of the last epoch (or while final.pt is written) used to
    be acknowledged and dropped: train() returned, and a reproduction trained its next arm. The
    run is complete — saved, marked finished — and the stop still reaches the caller."""
    cfg = tiny("baseline", "train.epochs=2", "train.log_every=1", "train.monitor_batches=0")
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        stop(m, cfg)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run, quiet=True, data=random_data)
    assert "it is finished and saved (checkpoints/final.pt); stopping here" in capsys.readouterr().err
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"
    assert torch.load(run / "checkpoints/final.pt", weights_only=True)["epoch"] == 2
    assert [r["epoch"] for r in _metrics(run)] == [1, 2] and not (run / ".lock").exists()
    with pytest.raises(RunError, match="already finished"):
        train(None, run, resume=True, quiet=True, data=random_data)


def test_lock_refuses_a_second_writer(tmp_path):
    lock = runio.RunLock(tmp_path)
    lock.acquire()
    with pytest.raises(RunError, match="in use by another dainv process"):
        runio.RunLock(tmp_path).acquire()
    lock.release()
    # A stale lock from a dead process is taken over.
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()}))
    runio.RunLock(tmp_path).acquire()


def test_baseline_without_monitoring_batches_has_no_dai_record(tmp_path, random_data, tiny, capsys):
    run = tmp_path / "nomon"
    train(tiny("baseline", "train.epochs=1", "train.monitor_batches=0"), run, quiet=True, data=random_data)
    (rec,) = _metrics(run)
    assert rec["dai"] == {} and rec["dai_monitor"] == {}
    assert "epoch 1/1 ce" in capsys.readouterr().err
