"""Bad input through the real command line (issue 13): exit status 2, one message, no traceback.

Every case runs ``dainv.cli.main`` (the function behind ``python -m dainv``); a representative
subset also runs as a real ``python -m dainv`` process. Nothing is created for a refused command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.slow  # real dainv processes (started together: each imports torch): ~12 s of CPU
def test_real_process_one_message_exit_2(tmp_path):
    files = {k: str(v) for k, v in _files(tmp_path).items()}
    procs = [subprocess.Popen([sys.executable, "-m", "dainv", *[a.format(**files) for a in args]], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args, _ in PROCESS_CASES]  # fmt: skip
    for (args, needle), proc in zip(PROCESS_CASES, procs):
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, stderr)
        assert "Traceback" not in stderr and stdout == "", (args, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dainv: error: ") and needle in lines[0], (args, stderr)
    assert not (tmp_path / "runs").exists()


# A network of one's own (issue 20 §4): the user's code, files and disk ------------------------

NETS = '''
from collections import OrderedDict
import torch
from torch import nn


def factory(num_classes, width=4):
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, padding=1), act1=nn.ReLU(),
        conv2=nn.Conv2d(width, width, 3, stride=2, padding=1), act2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(width, num_classes),
    ))


def three_logits(num_classes):
    return factory(3)


def not_a_module(num_classes):
    return "a network"


def broken(num_classes):
    raise ValueError("the factory is broken")


class Pair(nn.Module):
    def forward(self, x):
        return x, x


class Odd(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.act, self.pair, self.fc = nn.ReLU(), Pair(), nn.Linear(3, n)

    def forward(self, x):
        x = self.pair(self.act(self.act(x)))[0]
        return self.fc(x.mean((2, 3)))


def odd(num_classes):
    return Odd(num_classes)
'''


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A folder with the user's module (faultnets.py), one that fails on import, a 10-class
    npz data set and weights: the files of someone measuring their own network."""
    import torch

    root = tmp_path_factory.mktemp("own")
    (root / "faultnets.py").write_text(NETS)
    (root / "faultimport.py").write_text("import os\n\nraise RuntimeError('cannot start')\n")
    rng = np.random.default_rng(0)
    np.savez(root / "d.npz", x_train=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(40) % 10, x_test=rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
             y_test=np.arange(8) % 10)  # fmt: skip
    namespace: dict = {}
    exec(NETS, namespace)
    torch.save(namespace["factory"](10).state_dict(), root / "w.pt")
    torch.save(namespace["factory"](3).state_dict(), root / "w3.pt")
    torch.save(namespace["odd"](10).state_dict(), root / "odd.pt")
    torch.save(namespace["factory"](10, width=8).state_dict(), root / "w8.pt")
    from PIL import Image

    for split in ("train", "test"):
        for c, size in (("a", 8), ("b", 12)):
            (root / "imgs" / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(root / "imgs" / split / c / "0.png")
    from dainv.models import AllCNNC

    torch.save(AllCNNC(10).state_dict(), root / "allcnnc.pt")
    (root / "empty.pt").write_bytes(b"")
    return root


@pytest.fixture
def in_own(own, monkeypatch):
    """Run in the user's folder, with it on sys.path (tests/test_byo.py runs the command
    without: a factory is found in the current folder as `python -m` finds it)."""
    monkeypatch.chdir(own)
    monkeypatch.syspath_prepend(str(own))
    monkeypatch.setenv("XDG_CACHE_HOME", str(own / "cache"))
    for name in ("faultnets", "faultimport"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield own
    for name in ("faultnets", "faultimport"):
        sys.modules.pop(name, None)


def _refused(rc: int, text: str, *needles: str) -> None:
    """Exit 2 and one error line naming the ``needles``, no traceback (lines that a command
    prints before it fails, such as train's plan, may come first)."""
    assert rc == 2 and "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("dainv: error: ")]
    assert len(errors) == 1 and text.strip().endswith(errors[0]), text
    for n in needles:
        assert n in errors[0], f"{n!r} not in: {errors[0]}"


EVAL_OWN = ["evaluate", "--quiet", "--data", "npz:d.npz", "--weights"]
TRAIN_OWN = ["train", "--quiet", "--arm", "dai", "--out", "{tmp}/run", "--epochs", "1", "--set", "data.dataset=npz:d.npz",
             "--set", "train.batch_size=16", "--set", "train.monitor_batches=1"]  # fmt: skip

# The model a user names: its options, its factory, the module that holds it.
MODEL_FAULTS = {
    "kwargs-unknown": (TRAIN_OWN + ["--set", "model.kwargs={bogus: 1}"], ["model 'allcnnc'", "['bogus']", "options are ['width']"]),
    "kwargs-bad-value": (TRAIN_OWN + ["--set", "model.kwargs={width: -1}"], ["model 'allcnnc'", "width must be > 0"]),
    "eval-kwargs-unknown": (EVAL_OWN + ["w.pt", "--model", "allcnnc", "--model-kwargs", '{"bogus": 1}'], ["['bogus']"]),
    "eval-kwargs-not-object": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--model-kwargs", "[4]"], ["--model-kwargs", "JSON object"]),
    "eval-kwargs-not-json": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--model-kwargs", "{width: [}"], ["--model-kwargs", "not valid"]),
    "not-a-module": (EVAL_OWN + ["w.pt", "--model", "faultnets:not_a_module"], ["returned str, not an nn.Module"]),
    "not-a-module-train": (TRAIN_OWN + ["--set", "model.name=faultnets:not_a_module"], ["returned str, not an nn.Module"]),
    "wrong-logits": (EVAL_OWN + ["w3.pt", "--model", "faultnets:three_logits", "--layers", "act1"], ["returns (2, 3) for 2 images, not (2, 10) logits"]),
    "wrong-logits-train": (TRAIN_OWN + ["--set", "model.name=faultnets:three_logits", "--set", "train.layers=[act1]"], ["returns (2, 3)", "num_classes=10"]),
    "factory-raises": (EVAL_OWN + ["w.pt", "--model", "faultnets:broken"], ["faultnets.py, line 24", "ValueError: the factory is broken"]),
    "factory-raises-train": (TRAIN_OWN + ["--set", "model.name=faultnets:broken"], ["faultnets.py, line 24", "ValueError: the factory is broken"]),
    "import-raises": (EVAL_OWN + ["w.pt", "--model", "faultimport:net"], ["faultimport.py, line 3", "RuntimeError: cannot start"]),
    "import-raises-train": (TRAIN_OWN + ["--set", "model.name=faultimport:net"], ["faultimport.py, line 3", "RuntimeError: cannot start"]),
}  # fmt: skip


# Taps that are not one activation per image, and layer names that do not exist.
TAP_FAULTS = {
    "returns-tuple": (EVAL_OWN + ["odd.pt", "--model", "faultnets:odd", "--layers", "pair"], ["'pair' returned tuple, not a tensor"]),
    "runs-twice": (EVAL_OWN + ["odd.pt", "--model", "faultnets:odd", "--layers", "act"], ["'act' ran more than once"]),
    "returns-tuple-train": (TRAIN_OWN + ["--set", "model.name=faultnets:odd", "--set", "train.layers=[pair]"], ["'pair' returned tuple"]),
    "runs-twice-train": (TRAIN_OWN + ["--set", "model.name=faultnets:odd", "--set", "train.layers=act"], ["'act' ran more than once"]),
    "numbers-not-names": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--layers", "1,99"], ["unknown submodule name(s) ['1', '99']", "'act1'"]),
    "typo": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--layers", "act1,atc2"], ["'atc2': did you mean 'act2'"]),
    "typo-builtin": (EVAL_OWN + ["allcnnc.pt", "--model", "allcnnc", "--layers", "conv77"], ["unknown layer name(s) ['conv77']"]),
}  # fmt: skip


# Files that are not what they should be, and values out of range.
FILE_FAULTS = {
    "empty-weights": (EVAL_OWN + ["empty.pt", "--model", "faultnets:factory"], ["empty.pt is empty (0 bytes)"]),
    "empty-checkpoint": (["evaluate", "--quiet", "empty.pt", "--data", "npz:d.npz"], ["empty.pt is empty (0 bytes)"]),
    "weights-of-another-width": (EVAL_OWN + ["w8.pt", "--model", "faultnets:factory"], ["other shapes conv1.weight (8, 3, 3, 3) in the file, (4, 3, 3, 3) in the model", "and 2 more", "--model-kwargs"]),
    "weights-of-another-net": (EVAL_OWN + ["odd.pt", "--model", "faultnets:factory"], ["missing keys conv1.weight, conv1.bias, conv2.weight and 1 more", "other shapes fc.weight (10, 3) in the file, (10, 4) in the model"]),
    "folder-of-two-sizes": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--data", "folder:imgs"], ["2 different sizes", "dainv evaluate --image-size 64"]),
    "seed-huge": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--seed", "99999999999999999999"], ["--seed an integer of 20 digits", "from 0 to 2147483647"]),
    "seed-huge-train": (TRAIN_OWN + ["--seed", "99999999999999999999"], ["invalid setting seed", "from 0 to 2147483647"]),
    "normalize-no-std": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--normalize", "0.5"], ["--normalize '0.5'", "MEAN/STD"]),
    "normalize-zero-std": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--normalize", "0.5/0"], ["std > 0"]),
    "normalize-two-channels": (EVAL_OWN + ["w.pt", "--model", "faultnets:factory", "--normalize", "0.5,0.5/1,1"], ["2 values", "3-channel"]),
}  # fmt: skip


# One test for the three fault classes above (a model, its taps, files and values), by class.
OWN_FAULTS = {f"{cls}/{name}": v for cls, table in (("model", MODEL_FAULTS), ("taps", TAP_FAULTS), ("files", FILE_FAULTS))
              for name, v in table.items()}  # fmt: skip


@pytest.mark.parametrize("fault", list(OWN_FAULTS))
def test_own_network_faults_refused(in_own, tmp_path, capsys, fault):
    args, needles = OWN_FAULTS[fault]
    rc, text = _cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    _refused(rc, text, *needles)


class _NearlyFull:
    """A file on a disk with ``space`` bytes left: a write past them raises ENOSPC."""

    def __init__(self, f, space: int) -> None:
        self.f, self.left = f, space

    def write(self, data) -> int:
        if len(data) > self.left:
            import errno

            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


@pytest.mark.parametrize("space", [0, 3000], ids=["no-space", "a-little-space"])
def test_disk_full_while_saving_a_checkpoint(in_own, tmp_path, capsys, monkeypatch, space):
    """torch.save reports a failed write as "enforce fail … unexpected pos": the message must
    still be the disk's."""
    from dainv import runio

    real_mkstemp, real_fdopen, names = runio.tempfile.mkstemp, runio.os.fdopen, {}

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        names[fd] = Path(name).name
        return fd, name

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return _NearlyFull(f, space) if ".pt." in names.get(fd, "") else f  # checkpoints only

    monkeypatch.setattr(runio.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(runio.os, "fdopen", fdopen)
    args = [a.replace("{tmp}", str(tmp_path)) for a in TRAIN_OWN]
    rc, text = _cli(capsys, *args, "--set", "model.width=0.125")
    _refused(rc, text, "no space left on device while writing", str(tmp_path / "run" / "checkpoints"))
    assert not list((tmp_path / "run").glob("**/.*.tmp"))


REPORT_FAULTS = {
    "empty": ("", "`config.yaml` is empty"),
    "a-list": ("- a\n- b\n", "`config.yaml` holds a list, not a mapping"),
    "not-yaml": ("train: [\n", "`config.yaml` could not be read"),
    "text": ("hello\n", "`config.yaml` holds a str, not a mapping"),
}


@pytest.mark.parametrize("fault", list(REPORT_FAULTS))
def test_report_names_a_damaged_arm_config(tmp_path, capsys, fault):
    """An arm's damaged config.yaml is a problem the report lists, not a traceback: the rest
    of the reproduction is still reported."""
    content, problem = REPORT_FAULTS[fault]
    repro = tmp_path / "repro"
    runs = {arm: {"0": f"{arm}-s0"} for arm in ("baseline", "dai")}
    repro.mkdir()
    (repro / "reproduce.json").write_text(json.dumps({"preset": "quick", "arms": list(runs), "seeds": [0], "runs": runs}))
    for arm in runs:
        run = repro / f"{arm}-s0"
        run.mkdir()
        cfg = {"name": arm, "seed": 0, "train": {"views": 8, "alpha": 0.1 if arm == "dai" else 0.0}}
        (run / "config.yaml").write_text(content if arm == "dai" else yaml.safe_dump(cfg))
        (run / "meta.json").write_text(json.dumps({"status": "finished"}))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 0.5, "epoch_time_s": 1.0}) + "\n")
        (run / "eval").mkdir()
        scores = np.random.default_rng(0).random((20, 5)).astype(np.float32)
        np.savez(run / "eval" / "scores.npz", conv1=scores)
        (run / "eval" / "summary.json").write_text(json.dumps({
            "accuracy": {"single_view": 0.5}, "checkpoint": {"epoch": 1, "final": True},
            "invariance": {"layers": ["conv1"], "median": {"conv1": float(np.median(scores))}},
        }))  # fmt: skip
    rc, text = _cli(capsys, "report", repro)
    assert rc == 0 and "Traceback" not in text, text
    md = (repro / "report.md").read_text()
    assert problem in md and "dai" in md
