"""First contact (issue 13): help texts, the plan before training, extending a run, evaluation
options, the per-transformation table and reproduce's options — wired through ``dainv.cli``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import dainv.evaluate as ev
import dainv.reproduce as rp
import dainv.train as tr
from dainv import cli
from dainv.config import ARMS, load_config, to_dict

SUBCOMMANDS = ["train", "evaluate", "reproduce", "report", "presets"]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _help(*argv) -> str:
    parser = cli.build_parser()
    if not argv:
        return parser.format_help()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[argv[0]].format_help()


def test_help_cites_docs_method_never_spec():
    texts = [_help()] + [_help(s) for s in SUBCOMMANDS]
    assert all("SPEC" not in t for t in texts)
    assert all("SPEC" not in f.read_text() for f in Path(cli.__file__).parent.glob("*.py"))
    top, train = texts[0], texts[1]
    assert "docs/method.md" in top and "docs/method.md" in train
    for needle in ("350 epochs", "lr 0.01", "128 samples per step", "fp32"):  # the defaults
        assert needle in top, needle
    assert "--arm (required)" in " ".join(train.split())


def test_arms_come_from_the_one_table():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    arm = next(a for a in sub.choices["train"]._actions if a.dest == "arm")
    assert arm.choices == list(ARMS)
    repro = " ".join(_help("reproduce").split())
    assert ",".join(ARMS) in repro


def test_presets_lists_every_preset(capsys):
    rc, out, _ = _cli(capsys, "presets")
    assert rc == 0
    for name in (
        "paper",
        "paper-authors-code",
        "wrn-cifar10",
        "densenet-cifar10",
        "allcnn-tinyimagenet",
        "quick",
    ):
        assert f"\n{name} " in "\n" + out, name
    assert "SPEC" not in out


# Training: the plan, the arm, extending -----------------------------------------------------------


class _FakeTrainer:
    is_main = True
    history = [{"test_acc": None}]
    data = None


def test_train_prints_the_plan_with_a_time_class(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(
        tr, "train", lambda cfg, run_dir, **kw: calls.append((cfg, run_dir, kw)) or _FakeTrainer()
    )
    rc, out, err = _cli(
        capsys,
        "train",
        "--preset",
        "quick",
        "--arm",
        "dai",
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
    )
    assert rc == 0, err
    assert "dainv: training arm dai of preset quick" in err and "10 epochs x 63 steps" in err
    assert "expected time" in err and "on this CPU" in err
    assert "test accuracy not measured" in out  # test_acc may be null in a record
    cfg, run_dir, kw = calls[0]
    assert cfg.train.views == 8 and run_dir == tmp_path / "r" and kw["resume"] is False
    rc, _, err = _cli(
        capsys, "train", "--arm", "baseline", "--out", tmp_path / "p", "--device", "cpu"
    )
    assert rc == 0 and "(no preset)" in err and "350 epochs" in err
    assert "days" in err and "GPU job" in err  # the paper's recipe on a CPU says so


def _finished_run(path: Path) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(None, arm="dai"))))
    (path / "meta.json").write_text(json.dumps({"status": "finished"}))
    return path


def test_resume_with_epochs_passes_extend_epochs(tmp_path, capsys, monkeypatch):
    run = _finished_run(tmp_path / "run")
    calls = []

    def fake_train(
        cfg, run_dir, *, resume=False, force=False, quiet=False, data=None, extend_epochs=None
    ):
        calls.append((cfg, run_dir, resume, extend_epochs))
        return _FakeTrainer()

    monkeypatch.setattr(tr, "train", fake_train)
    for args in (["--epochs", "400"], ["--set", "train.epochs=400"], ["--set", "train.epochs=4e2"]):
        rc, _, err = _cli(capsys, "train", "--quiet", "--resume", run, *args)
        assert rc == 0, err
        assert calls.pop() == (None, run, True, 400)
    rc, _, err = _cli(capsys, "train", "--quiet", "--resume", run)
    assert rc == 0 and calls.pop() == (None, run, True, None)


def test_extend_a_finished_run_for_real(tmp_path, capsys):
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 64),
        x_test=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 32),
    )
    run = tmp_path / "run"
    sets = ["model.width=0.125", "train.batch_size=64", "train.monitor_batches=1", "train.milestones=[]",
            f"data.dataset=npz:{npz}", "eval.batch_size=32"]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    rc, _, err = _cli(
        capsys,
        "train",
        "--quiet",
        "--arm",
        "dai",
        "--epochs",
        "1",
        "--out",
        run,
        "--device",
        "cpu",
        *args,
    )
    assert rc == 0, err
    rc, _, err = _cli(capsys, "train", "--quiet", "--resume", run, "--epochs", "2")
    assert rc == 0, err
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"


# Evaluation: the per-transformation table, bare weights, interrupts ------------------------------

LAYERS = ["input", "conv1", "conv9"]
TRANSFORMS = ["rotation", "translation", "zoom", "shear", "flip", "brightness", "contrast"]


def _summary(per_transform_stats: bool = False) -> dict:
    med = {k: 0.5 for k in LAYERS}
    pt = {
        t: {k: round(0.1 * i + 0.01 * j, 3) for j, k in enumerate(LAYERS)}
        for i, t in enumerate(TRANSFORMS)
    }
    if per_transform_stats:
        pt = {t: {"median": v, "q1": v} for t, v in pt.items()}
    return {
        "accuracy": {"single_view": 0.5, "light_tta10": 0.6},
        "invariance": {"layers": LAYERS, "median": med},
        "per_transform": pt,
    }


@pytest.mark.parametrize("stats", [False, True])
def test_per_transform_prints_the_layer_by_transformation_table(
    tmp_path, capsys, monkeypatch, stats
):
    seen = {}

    def fake_evaluate(source, **kw):
        seen.update(kw)
        return _summary(stats)

    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    rc, out, err = _cli(capsys, "evaluate", tmp_path, "--per-transform", "--quiet")
    assert rc == 0, err
    assert seen["per_transform"] is True
    lines = out.splitlines()
    i = next(n for n, ln in enumerate(lines) if "per layer and transformation" in ln)
    header = lines[i + 1].split()
    assert header == ["layer", "all", *TRANSFORMS]
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[i + 2 : i + 2 + len(LAYERS)]}
    assert list(rows) == LAYERS
    assert rows["conv9"][0] == "0.500" and rows["conv9"][TRANSFORMS.index("shear") + 1] == "0.320"


def test_evaluate_bare_weights_are_wired(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(model, weights, data, layers=None, out=None, device=None, **kw):
        seen.update(
            model=model, weights=weights, data=data, layers=layers, out=out, device=device, **kw
        )
        return _summary()

    monkeypatch.setattr(ev, "evaluate_weights", fake, raising=False)
    w = tmp_path / "w.pt"
    rc, out, err = _cli(
        capsys, "evaluate", "--model", "pkg.mod:make", "--weights", w, "--data", "npz:/d.npz",
        "--layers", "conv1, conv9", "--out", tmp_path / "e", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    assert seen["model"] == "pkg.mod:make" and seen["weights"] == w and seen["data"] == "npz:/d.npz"
    assert (
        seen["layers"] == ["conv1", "conv9"]
        and seen["out"] == tmp_path / "e"
        and seen["device"] == "cpu"
    )
    assert "median invariance per layer" in out


def test_evaluate_missing_weights_file_says_so(tmp_path, capsys, random_npz):
    rc, _, err = _cli(
        capsys,
        "evaluate",
        "--model",
        "allcnnc",
        "--weights",
        tmp_path / "w.pt",
        "--data",
        f"npz:{random_npz}",
    )
    assert rc == 2 and "w.pt" in err and "Traceback" not in err


def test_interrupted_evaluate_does_not_advise_resume(tmp_path, capsys, monkeypatch):
    def interrupted(source, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "evaluate", interrupted)
    rc, _, err = _cli(capsys, "evaluate", tmp_path, "--quiet")
    assert rc == 130 and "--resume" not in err and "run the same command again" in err


# Reproduce's options -----------------------------------------------------------------------------


def test_reproduce_parallel_and_force_are_passed(tmp_path, capsys, monkeypatch):
    seen = {}

    def fake(preset, parallel=1, force=False, **kw):
        seen.update(preset=preset, parallel=parallel, force=force)
        return tmp_path / "report.md"

    monkeypatch.setattr(rp, "reproduce", fake)
    rc, _, err = _cli(capsys, "reproduce", "--preset", "quick", "--parallel", "3", "--force")
    assert rc == 0, err
    assert seen == {"preset": "quick", "parallel": 3, "force": True}
    rc, _, _ = _cli(capsys, "reproduce", "--preset", "quick")
    assert rc == 0 and seen["parallel"] == 1 and seen["force"] is False


