"""Bring your own network and data, through the real CLI: a thesis model and a user's factory on
an image folder (two image sizes, one corrupt file), trained and evaluated; the folder's cache
reused (in dainv's cache folder, never in the user's); a plain state_dict evaluated with
``--model/--weights`` and the options such a network needs (issue 20 §5: constructor arguments,
input normalisation, the layer syntax, a plain module's blocks, the image size); the tap layers
of a plain module recorded in its checkpoint; odd entries in an image folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dainv import cli
from dainv.checkpoint import model_info, save_checkpoint
from dainv.errors import RunError
from dainv.measure import invariance_profile
from dainv.models import tapped

REPO = Path(__file__).resolve().parents[1]

FACTORY = '''
from collections import OrderedDict
import torch
from torch import nn


def factory(num_classes, width=8):
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, width, 3, padding=1), act1=nn.ReLU(),
        conv2=nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(2 * width, num_classes),
    ))


def scaled(num_classes):
    """Reads a tensor's value while it is built: cannot be built on the meta device."""
    net = factory(num_classes)
    net.scale = float(torch.ones(1).sum().item())
    return net
'''

TOY = ["--epochs", "1", "--set", "train.batch_size=16", "--set", "train.monitor_batches=1",
       "--set", "eval.batch_size=64", "--quiet"]  # fmt: skip


def _user_module() -> dict:
    namespace: dict = {}
    exec(FACTORY, namespace)
    return namespace


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for c, colour in enumerate(((200, 40, 40), (40, 40, 200))):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                size = 32 if i % 2 else 40  # two sizes: data.image_size is needed
                px = rng.normal(colour, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(px).save(folder / f"{i}.png")
    (root / "images" / "train" / "class0" / "broken.png").write_bytes(b"not an image")
    (root / "mynets.py").write_text(FACTORY)
    np.savez(root / "d.npz", x_train=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(20) % 10, x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(16) % 10)  # fmt: skip
    factory = _user_module()["factory"]
    torch.manual_seed(0)
    torch.save(factory(num_classes=10).state_dict(), root / "plain.pt")
    torch.save(factory(num_classes=10, width=4).state_dict(), root / "plain4.pt")
    torch.save(factory(num_classes=2).state_dict(), root / "two.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(root)]),
           "XDG_CACHE_HOME": str(root / "xdg")}  # fmt: skip
    return root, env


@pytest.fixture
def in_world(world, monkeypatch):
    """In-process CLI calls in the user's folder (the folder on sys.path, a private cache)."""
    root, env = world
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("XDG_CACHE_HOME", env["XDG_CACHE_HOME"])
    yield root
    sys.modules.pop("mynets", None)


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


DATA = ["--set", "data.dataset=folder:images", "--set", "data.image_size=32"]


def test_folder_needs_image_size_and_names_the_corrupt_file(in_world, capsys):
    rc, text = _cli(capsys, "train", "--arm", "dai", "--out", "runs/x", "--set", "data.dataset=folder:images",
                    "--set", "data.skip_bad=true", *TOY)  # fmt: skip
    assert rc == 2 and "image_size" in text and "Traceback" not in text
    rc, text = _cli(capsys, "train", "--arm", "dai", "--out", "runs/x", *DATA, *TOY)
    assert rc == 2 and "broken.png" in text and "Traceback" not in text


def test_thesis_model_on_an_image_folder(in_world, capsys):
    root = in_world
    listing = sorted(p.relative_to(root / "images") for p in (root / "images").rglob("*"))
    args = ["--set", "model.name=wrn-10-1", "--set", "train.layers=auto", "--set", "data.skip_bad=true"]
    rc, text = _cli(capsys, "train", "--arm", "dai", "--out", "runs/wrn", *DATA, *args, *TOY)
    assert rc == 0, text[-3000:]
    assert "broken.png" in text or "skipped 1" in text  # counted and reported
    # Decoded once, cached in dainv's cache folder; nothing added to the user's folder.
    assert list((root / "xdg" / "dainv" / "cache" / "images").glob("*-dainv-cache-folder-32-*.npz"))
    assert sorted(p.relative_to(root / "images") for p in (root / "images").rglob("*")) == listing
    rc, text = _cli(capsys, "evaluate", "runs/wrn", "--quiet")
    assert rc == 0, text[-3000:]
    s = json.loads((root / "runs/wrn/eval/summary.json").read_text())
    assert s["invariance"]["layers"] == ["input", "block1", "block2", "block3"]
    # The second run loads the cache instead of decoding the images again.
    rc, text = _cli(capsys, "train", "--arm", "baseline", "--out", "runs/wrn-b", *DATA, *args, *TOY)
    assert rc == 0 and "cache" in text, text[-3000:]


def test_users_factory_trains_and_evaluates(in_world, capsys):
    args = ["--set", "model.name=mynets:factory", "--set", "train.layers=[act1, act2]",
            "--set", "data.skip_bad=true"]  # fmt: skip
    rc, text = _cli(capsys, "train", "--arm", "dai", "--out", "runs/mine", *DATA, *args, *TOY)
    assert rc == 0, text[-3000:]
    rc, text = _cli(capsys, "evaluate", "runs/mine", "--quiet")
    assert rc == 0, text[-3000:]
    s = json.loads((in_world / "runs/mine/eval/summary.json").read_text())
    assert s["invariance"]["layers"][-2:] == ["act1", "act2"]


def test_factory_beside_the_command(world):
    """`dainv evaluate --model mynets:factory` with mynets.py in the current folder, run as the
    installed `dainv` script runs (the current folder is not on sys.path, unlike `python -m`)."""
    root, env = world
    launcher = root / "bin" / "dainv"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text("import sys\nfrom dainv.cli import main\nsys.exit(main())\n")
    env = {**env, "PYTHONPATH": str(REPO / "src")}  # not the user's folder
    p = subprocess.run([sys.executable, str(launcher), "evaluate", "--model", "mynets:factory",
                        "--weights", "plain.pt", "--data", "npz:d.npz", "--layers", "act1,act2",
                        "--quiet", "--out", "beside-eval"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    assert "act2" in p.stdout and "accuracy" in p.stdout


# (extra arguments of `evaluate --model mynets:factory --data npz:d.npz --quiet`, the layers scored)
OPTIONS = {
    "constructor-arguments": (["--weights", "plain4.pt", "--model-kwargs", '{"width": 4}', "--layers", "act2"], ["act2"]),
    "layers-as-train-layers": (["--weights", "plain.pt", "--layers", "[act1, act2]"], ["act1", "act2"]),
    "plain-module-blocks": (["--weights", "plain.pt"], ["input", "conv1", "conv2", "fc"]),
    "image-folder": (["--weights", "two.pt", "--data", "folder:images", "--image-size", "32", "--skip-bad",
                      "--layers", "act1"], ["act1"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OPTIONS))
def test_evaluate_options_for_a_network_of_ones_own(in_world, tmp_path, capsys, case):
    extra, layers = OPTIONS[case]
    out = tmp_path / "eval"
    rc, text = _cli(capsys, "evaluate", "--model", "mynets:factory", "--data", "npz:d.npz", "--quiet",
                    "--out", out, *extra)  # fmt: skip
    assert rc == 0, text
    assert json.loads((out / "summary.json").read_text())["invariance"]["layers"] == layers


class Normalising(nn.Module):
    """The reference: a network that normalises its input itself."""

    def __init__(self, net: nn.Module, mean, std) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)


MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def test_normalize_equals_a_network_that_normalises_itself(in_world, tmp_path, capsys):
    """--normalize (and normalize= in Python) is applied after the transformations, which act
    on [0, 1] images; the input tap stays in pixel space."""
    net = _user_module()["factory"](num_classes=10)
    net.load_state_dict(torch.load(in_world / "plain.pt", weights_only=True))
    x = torch.from_numpy(np.load(in_world / "d.npz")["x_test"]).permute(0, 3, 1, 2).contiguous()
    ref = invariance_profile(tapped(Normalising(net, MEAN, STD), ["net.act1", "net.fc"]), x,
                             layers=["input", "net.act1", "net.fc"])  # fmt: skip
    mine = invariance_profile(tapped(net, ["act1", "fc"]), x, layers=["input", "act1", "fc"],
                              normalize=(MEAN, STD))  # fmt: skip
    plain = invariance_profile(tapped(net, ["act1", "fc"]), x, layers=["input", "act1", "fc"])
    for layer in ("act1", "fc"):
        np.testing.assert_allclose(mine[layer], ref[f"net.{layer}"], rtol=1e-5, atol=1e-6)
        assert not np.allclose(plain[layer], ref[f"net.{layer}"], rtol=1e-3)  # it matters
    np.testing.assert_array_equal(mine["input"], ref["input"])
    # The command line: the same scores.
    norm = ",".join(map(str, MEAN)) + "/" + ",".join(map(str, STD))
    rc, text = _cli(capsys, "evaluate", "--model", "mynets:factory", "--weights", "plain.pt", "--data",
                    "npz:d.npz", "--layers", "input,act1,fc", "--normalize", norm, "--quiet", "--out", tmp_path / "e")  # fmt: skip
    assert rc == 0, text
    with np.load(tmp_path / "e" / "scores.npz") as z:
        for layer in ("act1", "fc"):
            np.testing.assert_allclose(z[layer], ref[f"net.{layer}"], rtol=1e-5, atol=1e-6)
    protocol = json.loads((tmp_path / "e" / "summary.json").read_text())["protocol"]
    assert protocol["normalize"] == {"mean": MEAN, "std": STD}


def test_invariance_profile_of_a_plain_module_says_how_to_wrap_it():
    net = _user_module()["factory"](num_classes=10)
    with pytest.raises(RunError, match=r"wrap it with dainv.models.tapped\(model, layers\)"):
        invariance_profile(net, torch.rand(4, 3, 8, 8), layers=["act1"])


def _saved_by_hand(root: Path, out: Path) -> Path:
    """A checkpoint written from a user's own loop: save_checkpoint of a tapped() plain module."""
    net = tapped(_user_module()["factory"](num_classes=10), ["act1", "act2"])
    return save_checkpoint(out / "mine.pt", net, info=model_info("mynets:factory", 10))


# (how the checkpoint is made: train's --set arguments or by hand, the layers it records)
TAPS = {
    "save-checkpoint": (None, ["act1", "act2"]),
    "train-auto": (["--set", "model.name=mynets:factory", "--set", "train.layers=auto"], ["conv1", "conv2", "fc"]),
    "train-comma-separated": (["--set", "model.name=mynets:factory", "--set", "train.layers=act1,act2"], ["act1", "act2"]),
    "factory-reads-values": (["--set", "model.name=mynets:scaled", "--set", "train.layers=[act2]"], ["act2"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TAPS))
def test_checkpoint_of_a_plain_module_records_its_taps(in_world, tmp_path, capsys, case):
    """A plain module's tap layers are in its checkpoint (model_info kwargs ``layers``), and
    evaluate taps them: trained by dainv (named, ``auto``, or a factory that needs values
    while it is built) or saved from the user's own loop."""
    args, layers = TAPS[case]
    if args is None:
        ck = _saved_by_hand(in_world, tmp_path)
    else:
        rc, text = _cli(capsys, "train", "--arm", "dai", "--out", tmp_path / "run", "--set", "data.dataset=npz:d.npz",
                        "--set", "data.n_test=4", *args, *TOY)  # fmt: skip
        assert rc == 0, text
        ck = tmp_path / "run" / "checkpoints" / "final.pt"
    assert torch.load(ck, weights_only=True)["model_info"]["kwargs"]["layers"] == layers
    rc, text = _cli(capsys, "evaluate", ck, "--data", "npz:d.npz", "--n-test", "4", "--quiet", "--out", tmp_path / "e")
    assert rc == 0, text
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["invariance"]["layers"] == ["input", *layers]


def _non_utf8(train: Path) -> str:
    shutil.copy(train / "class0" / "1.png", os.path.join(os.fsencode(train / "class0"), b"caf\xe9.png"))
    return ""  # read like any other image


def _fifo(train: Path) -> str:
    os.mkfifo(train / "class1" / "pipe.png")
    return "not regular files (a FIFO, socket or device)"


def _loose(train: Path) -> str:
    shutil.copy(train / "class0" / "1.png", train / "loose.png")
    return "ignored 1 image file(s) directly in"


ODD_ENTRIES = {"non-utf8-name": _non_utf8, "fifo": _fifo, "image-outside-class-folders": _loose}


@pytest.mark.parametrize("entry", list(ODD_ENTRIES))
def test_odd_entries_in_an_image_folder(in_world, tmp_path, capsys, entry):
    """Read (a name that is not UTF-8), skipped with a note (a FIFO named *.png, which would
    block) or noted as not read (an image outside the class folders)."""
    folder = tmp_path / "images"
    def not_32(_, names):  # the 32 x 32 images only (odd numbers), no broken file
        return [n for n in names if n.endswith(".png") and not (n[:-4].isdigit() and int(n[:-4]) % 2)]

    shutil.copytree(in_world / "images", folder, ignore=not_32)
    note = ODD_ENTRIES[entry](folder / "train")

    def hung(*_):
        raise TimeoutError("loading the image folder hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        rc, text = _cli(capsys, "evaluate", "--model", "mynets:factory", "--weights", "two.pt", "--data",
                        f"folder:{folder}", "--layers", "act1", "--out", tmp_path / "e")  # fmt: skip
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rc == 0 and "Traceback" not in text, text
    assert note in text
