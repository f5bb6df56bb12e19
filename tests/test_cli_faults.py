"""Bad input through the real command line (issue 13): exit status 2, one message, no traceback.

Every case runs ``dainv.cli.main`` (the function behind ``python -m dainv``); a representative
subset also runs as a real ``python -m dainv`` process. Nothing is created for a refused command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dainv import cli
from dainv.config import load_config, to_dict


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


def _one_error(rc: int, text: str, *needles: str) -> None:
    assert rc == 2, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("dainv: error: ")]
    assert len(errors) == 1 and text.strip() == errors[0], text  # one message, nothing else
    for n in needles:
        assert n in text, f"{n!r} not in: {text}"


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "latin1": ("description: caf\xe9\n".encode("latin-1")),
        "dup": b"train:\n  epochs: 10\n  epochs: 20\n",
        "blank": b"train:\n  lr:\n",
        "bool": b"train:\n  epochs: true\n",
        "empty-section": b"model:\n",
        "huge": b"model:\n  width: 1e300\n",
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.yaml"
        out[name].write_bytes(data)
    return out


# (arguments after `train --quiet --arm dai --out RUN`, expected pieces of the one message)
TRAIN_FAULTS = {
    # F1: empty and null values
    "epochs-empty": (["--set", "train.epochs="], ["'train.epochs' has no value", "--set train.epochs="]),
    "epochs-null": (["--set", "train.epochs=null"], ["'train.epochs' has no value"]),
    "epochs-tilde": (["--set", "train.epochs=~"], ["'train.epochs' has no value"]),
    "width-empty": (["--set", "model.width="], ["'model.width' has no value"]),
    "lr-empty": (["--set", "train.lr="], ["'train.lr' has no value"]),
    "dataset-empty": (["--set", "data.dataset="], ["'data.dataset' has no value"]),
    "device-empty": (["--set", "device="], ["'device' has no value"]),
    "milestones-null": (["--set", "train.milestones=null"], ["'train.milestones' has no value"]),
    "layers-empty": (["--set", "train.layers="], ["'train.layers' has no value"]),
    "yaml-blank-key": (["--config", "{blank}"], ["'train.lr' has no value", "blank.yaml"]),
    "yaml-empty-section": (["--config", "{empty-section}"], ["section 'model' is empty", "empty-section.yaml"]),
    # M1: 1e-3 is a number (the error is about the other key)
    "lr-exponent-accepted": (["--set", "train.lr=1e-3", "--set", "data.n_test=1"], ["data.n_test"]),
    # F2: devices
    "device-cuda-abc": (["--device", "cuda:abc"], ["invalid device 'cuda:abc'"]),
    "device-cudax": (["--device", "cudax"], ["invalid device 'cudax'"]),
    "device-xyz-set": (["--set", "device=xyz"], ["invalid device 'xyz'"]),
    # F3: not UTF-8
    "yaml-latin1": (["--config", "{latin1}"], ["not UTF-8", "latin1.yaml", "save it as UTF-8"]),
    # F4: bounds, NaN
    "lr-1e39": (["--set", "train.lr=1e39"], ["invalid setting train.lr", "at most 10"]),
    "width-1e300": (["--set", "model.width=1e300"], ["invalid setting model.width", "at most 64"]),
    "width-1e300-file": (["--config", "{huge}"], ["invalid setting model.width", "huge.yaml"]),
    "epochs-huge": (["--epochs", "1000000"], ["invalid setting train.epochs", "at most 10,000"]),
    "batch-huge": (["--set", "train.batch_size=10000000"], ["invalid setting train.batch_size"]),
    "lr-nan": (["--set", "train.lr=.nan"], ["'train.lr' takes a finite number"]),
    "width-inf": (["--set", "model.width=.inf"], ["'model.width' takes a finite number"]),
    # duplicate keys, booleans
    "yaml-duplicate": (["--config", "{dup}"], ["'epochs' is given twice (lines 2 and 3)", "dup.yaml"]),
    "milestones-bool": (["--set", "train.milestones=[true]"], ["'train.milestones' takes a list of integers"]),
    "epochs-bool-file": (["--config", "{bool}"], ["'train.epochs' takes an integer, got True"]),
    # F6
    "n-test-1": (["--set", "data.n_test=1"], ["invalid setting data.n_test", ">= 2"]),
    # protocol
    "protocol-contradiction": (
        ["--set", "method.protocol=authors_code", "--set", "train.denominator=all"],
        ["method.protocol=authors_code", "train.denominator=all"],
    ),
    "protocol-unknown": (["--set", "method.protocol=keras"], ["method.protocol"]),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(TRAIN_FAULTS))
def test_train_refuses(tmp_path, capsys, monkeypatch, fault):
    monkeypatch.chdir(tmp_path)
    files = _files(tmp_path)
    args, needles = TRAIN_FAULTS[fault]
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    out = tmp_path / "run"
    rc, text = _cli(capsys, "train", "--quiet", "--arm", "dai", "--out", out, *args)
    _one_error(rc, text, *needles)
    assert not out.exists() and not (tmp_path / "runs").exists()


def _fake_run(path: Path, **change) -> Path:
    path.mkdir()
    d = to_dict(load_config(None, arm="dai"))
    for key, val in change.items():
        section, name = key.split("__")
        d[section][name] = val
    (path / "config.yaml").write_text(yaml.safe_dump(d))
    (path / "meta.json").write_text(json.dumps({"status": "interrupted"}))
    return path


def test_resume_with_a_blank_key_in_the_run_config(tmp_path, capsys):
    run = _fake_run(tmp_path / "run", train__epochs=None)
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    _one_error(rc, text, "'train.epochs' has no value", str(run / "config.yaml"))


def test_resume_with_a_duplicate_key_in_the_run_config(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    (run / "config.yaml").write_text((run / "config.yaml").read_text() + "seed: 3\n")
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    _one_error(rc, text, "'seed' is given twice", "config.yaml")


def test_resume_takes_no_other_overrides(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run, "--set", "train.lr=0.1")
    _one_error(rc, text, "--resume takes no overrides but train.epochs", "--epochs N")


def test_resume_extend_with_a_bad_epoch_count(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run, "--set", "train.epochs=")
    _one_error(rc, text, "'train.epochs' has no value")


EVAL_FAULTS = {
    "device-xyz": (["{run}", "--device", "xyz"], ["invalid device 'xyz'"]),
    "device-cuda-abc": (["{run}", "--device", "cuda:abc"], ["invalid device 'cuda:abc'"]),
    "n-test-1": (["{run}", "--n-test", "1"], ["--n-test 1", "at least 2"]),
    "no-source": ([], ["give a run folder or checkpoint"]),
    "weights-without-model": (["--weights", "w.pt"], ["needs --model, --weights and --data", "--model, --data"]),
    "weights-and-run": (["{run}", "--model", "allcnnc", "--weights", "w.pt", "--data", "cifar10"], ["not both"]),
    "empty-layers": (["{run}", "--layers", ","], ["--layers is empty"]),
}  # fmt: skip


@pytest.mark.parametrize("fault", list(EVAL_FAULTS))
def test_evaluate_refuses(tmp_path, capsys, fault):
    args, needles = EVAL_FAULTS[fault]
    run = tmp_path / "run"
    rc, text = _cli(capsys, "evaluate", "--quiet", *[a.format(run=run) for a in args])
    _one_error(rc, text, *needles)
    assert not run.exists()


REPRODUCE_FAULTS = {
    "parallel-0": (["--parallel", "0"], ["--parallel 0", ">= 1"]),
    "null-value": (["--set", "train.epochs=null"], ["'train.epochs' has no value"]),
    "lr-1e39": (["--set", "train.lr=1e39"], ["invalid setting train.lr"]),
    "device-cudax": (["--device", "cudax"], ["invalid device 'cudax'"]),
}


@pytest.mark.parametrize("fault", list(REPRODUCE_FAULTS))
def test_reproduce_refuses(tmp_path, capsys, fault):
    args, needles = REPRODUCE_FAULTS[fault]
    out = tmp_path / "repro"
    rc, text = _cli(capsys, "reproduce", "--preset", "quick", "--quiet", "--out", out, *args)
    _one_error(rc, text, *needles)
    assert not out.exists()


def test_bare_train_refuses_and_starts_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, text = _cli(capsys, "train")
    _one_error(rc, text, "choose an arm with --arm", "baseline", "dai", "control", "--preset quick")
    assert list(tmp_path.iterdir()) == []


# The same through a real process ---------------------------------------------------------------

PROCESS_CASES = [
    (["train"], "choose an arm with --arm"),
    (["train", "--arm", "dai", "--set", "train.epochs="], "'train.epochs' has no value"),
    (["train", "--arm", "dai", "--device", "cudax"], "invalid device 'cudax'"),
    (["train", "--arm", "dai", "--set", "train.lr=1e39"], "invalid setting train.lr"),
    (["train", "--arm", "dai", "--config", "{latin1}"], "not UTF-8"),
    (["train", "--arm", "dai", "--config", "{dup}"], "is given twice"),
    (["evaluate", "nowhere", "--device", "xyz"], "invalid device 'xyz'"),
]


def test_real_process_one_message_exit_2(tmp_path):
    files = {k: str(v) for k, v in _files(tmp_path).items()}
    for args, needle in PROCESS_CASES:
        p = subprocess.run(
            [sys.executable, "-m", "dainv", *[a.format(**files) for a in args]],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert p.returncode == 2, (args, p.stderr)
        assert "Traceback" not in p.stderr and p.stdout == "", (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dainv: error: ") and needle in lines[0], (
            args,
            p.stderr,
        )
    assert not (tmp_path / "runs").exists()
