"""Results that were silently wrong or lost (issue 20 §2, §3), one group per fault class.

* an evaluation is its checkpoint *and* its protocol: another protocol in ``RUN/eval`` is not
  the run's evaluation (reproduce redoes it, saying so; the report refuses unpaired CIs);
* staleness is judged against whatever the run holds (``last.pt`` of a killed run, the run's
  identity after ``--force``);
* per-arm settings: arms trained with settings no declared variant explains are flagged;
* data: subsets of class-ordered splits are stratified; linked folders are read once each;
* run state lost or changed: a kept checkpoint lost by a kill is made again (or recorded); a
  resume on changed data is refused;
* non-finite weights are refused, naming the tensors;
* interrupted writers: a killed report leaves the old one whole; ``--force``'s trash of a
  killed process is removed at the next start.

Runs are tiny (conftest's ``tiny_overrides``) on a synthetic npz data set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dainv import cli, runio
from dainv.data import load_dataset, random_dataset
from dainv.evalfolders import eval_status
from dainv.reproduce import reproduce

ARMS = ["baseline", "dai"]


def _stub_report(folder):
    """The report's figures (seconds each) are not what most tests here are about."""
    path = Path(folder) / "report.md"
    path.write_text("stub")
    return path


def _save_npz(path: Path, x: np.ndarray, y: np.ndarray, n_train: int) -> Path:
    np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (288, 32, 32, 3), dtype=np.uint8)
    return _save_npz(tmp_path_factory.mktemp("npz") / "tiny.npz", x, np.arange(288) % 10, 256)


@pytest.fixture(scope="module")
def other_npz(tmp_path_factory) -> Path:
    """The same classes and sizes as :func:`npz`, other images."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (288, 32, 32, 3), dtype=np.uint8)
    return _save_npz(tmp_path_factory.mktemp("npz2") / "other.npz", x, np.arange(288) % 10, 256)


@pytest.fixture(scope="module")
def sets(tiny_overrides):
    def make(npz, *extra):
        return [*tiny_overrides, f"data.dataset=npz:{npz}", "data.n_train=128", "train.batch_size=64",
                "data.n_test=32", "eval.batch_size=32", "eval.tta_views=2", "train.keep_epochs=[]", *extra]  # fmt: skip

    return make


@pytest.fixture(scope="module")
def repro(tmp_path_factory, npz, sets) -> Path:
    """A finished reproduction (baseline and DAI, seed 0), evaluated with the runs' protocol."""
    out = tmp_path_factory.mktemp("silent") / "quick"
    with pytest.MonkeyPatch.context() as m:
        m.setattr("dainv.report.build_report", _stub_report)
        reproduce("quick", out, arms=ARMS, overrides=sets(npz), quiet=True)
    return out


@pytest.fixture
def copy(repro, tmp_path, monkeypatch) -> Path:
    """A copy of :func:`repro` to change (the report stubbed)."""
    monkeypatch.setattr("dainv.report.build_report", _stub_report)
    dest = tmp_path / "quick"
    shutil.copytree(repro, dest)
    return dest


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


def _reproduce_again(capsys, npz, sets, out: Path, *extra: str, arms=ARMS, force=False) -> str:
    capsys.readouterr()
    reproduce("quick", out, arms=list(arms), overrides=sets(npz, *extra), quiet=True, force=force)
    return capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 1. An evaluation is its checkpoint and its protocol


def _other_protocol(run: Path, spelling: str, capsys, other_npz: Path) -> str:
    """Evaluate ``run`` into its own ``eval/`` with another protocol than the run's; what
    ``dainv evaluate`` said."""
    from dainv.evaluate import evaluate

    if spelling == "precision":  # an evaluation under bf16 of an fp32 run: its record says so
        path = run / "eval" / "summary.json"
        s = json.loads(path.read_text())
        s["protocol"]["precision"] = "bf16"
        path.write_text(json.dumps(s))
        return "note: … was evaluated with another protocol than the run's own"
    if spelling == "scheme":
        evaluate(run, out_dir=run / "eval", scheme="heavier_eval_authors", quiet=True)
        return capsys.readouterr().err
    args = {"n_test": ["--n-test", "4"], "seed": ["--seed", "3"], "dataset": ["--dataset", f"npz:{other_npz}"],
            "layers": ["--layers", "conv1,conv2"]}[spelling]  # fmt: skip
    rc, text = _cli(capsys, "evaluate", run, "--quiet", *args)
    assert rc == 0, text
    return text


PROTOCOLS = {
    "n_test": "4 test images, the run's 32",
    "seed": "seed 3, the run's 0",
    "dataset": "data set npz:",
    "layers": "layers ['conv1', 'conv2']",
    "scheme": "scheme 'heavier_eval_authors', the run's 'heavier_eval'",
    "precision": "precision 'bf16', the run's 'fp32'",
}


@pytest.mark.parametrize("spelling", list(PROTOCOLS))
def test_an_evaluation_with_another_protocol_is_not_the_runs(copy, npz, other_npz, sets, capsys, spelling):
    run = copy / "dai-s0"
    assert eval_status(run) == "current"
    said = _other_protocol(run, spelling, capsys, other_npz)
    assert eval_status(run) == "stale"
    assert "was evaluated with another protocol than the run's own" in said, said  # said at once
    from dainv.evalfolders import stale_reason

    assert PROTOCOLS[spelling] in stale_reason(run) and "another evaluation protocol" in stale_reason(run)
    err = _reproduce_again(capsys, npz, sets, copy)
    assert "dai (seed 0): evaluating (the evaluation there is stale" in err and PROTOCOLS[spelling] in err
    assert "baseline (seed 0): evaluating" not in err
    assert eval_status(run) == "current"
    p = json.loads((run / "eval" / "summary.json").read_text())["protocol"]
    assert (p["n_test"], p["seed"], p["scheme"], p["precision"]) == (32, 0, "heavier_eval", "fp32")


def test_the_report_refuses_to_compare_arms_evaluated_on_other_images(copy, capsys, monkeypatch, other_npz):
    from dainv import report

    monkeypatch.setattr("dainv.report.figures.FIGURES", [])  # no figures: seconds each
    _other_protocol(copy / "dai-s0", "n_test", capsys, other_npz)
    md = report.write_report(report.load_reproduction(copy)).read_text()
    head = md.split("\n## ")[0]
    assert "Warning — arms evaluated on different images are not compared" in head
    assert "4 test images" in head and "32 test images" in head
    assert "Warning — stale evaluations" in head and "another evaluation protocol" in head
    assert "dai − baseline (95 % CI)" not in md  # no CI of a difference that is not paired
    res = json.loads((copy / "results.json").read_text())
    assert "dai − baseline" in res["differences"]["not_compared"] and not res["differences"]["vs_baseline"]


# ---------------------------------------------------------------------------------------------
# 2. Staleness against whatever the run holds


def _killed(run: Path) -> None:
    """Make ``run`` look killed in epoch 2: last.pt of epoch 1, no final.pt, status running."""
    ck = run / "checkpoints"
    state = torch.load(ck / "last.pt", weights_only=False)
    state["epoch"], state["model"] = 1, {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, ck / "last.pt")
    (ck / "final.pt").unlink()
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))


def _forced_again(run: Path) -> None:
    """``train --force`` replaced the run after (or while) ``eval/`` was written, and was killed
    before its first checkpoint: a new run_id, no checkpoint."""
    shutil.rmtree(run / "checkpoints")
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running", "run_id": "0" * 32}))


KILLED = {
    "another run's eval/ in a killed run": ("copy", "`checkpoints/last.pt` is not the checkpoint"),
    "eval/ of the run that --force replaced": ("force", "written for another run than this one"),
}


@pytest.mark.parametrize("case", list(KILLED))
def test_staleness_is_judged_against_the_checkpoint_the_run_has(copy, case):
    from dainv import report

    how, why = KILLED[case]
    run = copy / "dai-s0"
    if how == "copy":
        _killed(run)
        shutil.rmtree(run / "eval")
        shutil.copytree(copy / "baseline-s0" / "eval", run / "eval")  # final, epoch 2 of 2: another run's
        s = json.loads((run / "eval" / "summary.json").read_text())
        del s["run_id"]  # (its run id alone would tell; here the checkpoint must)
        (run / "eval" / "summary.json").write_text(json.dumps(s))
    else:
        _forced_again(run)
    assert why in (report.load_run(run).stale_reason or ""), report.load_run(run).stale_reason
    assert eval_status(run) == "stale"


# ---------------------------------------------------------------------------------------------
# 3. Per-arm settings


def test_arms_trained_with_different_settings_are_flagged(copy, npz, sets, capsys, monkeypatch):
    from dainv import report

    monkeypatch.setattr("dainv.report.figures.FIGURES", [])
    md = report.write_report(report.load_reproduction(copy)).read_text()
    assert "trained with different settings" not in md  # the arms differ by views and α only
    _reproduce_again(capsys, npz, sets, copy, "train.lr=0.05", arms=["baseline"], force=True)
    md = report.write_report(report.load_reproduction(copy)).read_text()
    head = md.split("\n## ")[0]
    assert "**Warning — the arms were trained with different settings**" in head
    assert "`train.lr` baseline 0.05, dai 0.01" in head
    assert "these settings are what ran" not in md and "Not every arm ran with them" in head
    res = json.loads((copy / "results.json").read_text())
    assert res["settings"]["undeclared"] == ["train.lr"]
    assert res["settings"]["differ"]["train.lr"] == {"baseline": [0.05], "dai": [0.01]}
    assert "| train.lr |" in md or "train.lr |" in md.split("Configuration per arm")[0]


# ---------------------------------------------------------------------------------------------
# 4, 5. Data: stratified subsets of class-ordered splits; linked folders read once


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _folder(root: Path, per_class: int = 4, classes=("a", "b", "c")) -> Path:
    for split in ("train", "test"):
        for i, cls in enumerate(classes):
            for j in range(per_class):
                _png(root / split / cls / f"{j}.png", 40 * i + j)
    return root


def _sorted_npz(root: Path) -> Path:
    y = np.repeat(np.arange(3), 4)
    x = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    path = root / "sorted.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    return path


KINDS = {"folder": lambda root: f"folder:{_folder(root / 'f')}", "npz sorted by class": lambda root: f"npz:{_sorted_npz(root)}"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_subsets_of_class_ordered_data_are_stratified(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ds = load_dataset(KINDS[kind](tmp_path))
    sub = ds.subset(6, 3)
    assert sorted(sub.y_train.tolist()) == [0, 0, 1, 1, 2, 2] and sorted(sub.y_test.tolist()) == [0, 1, 2]
    assert sub.subset(3, 3).y_train.tolist() == sub.y_train[:3].tolist()  # a subset of it: the same rule
    for k in range(3):  # each class's first images, in file order
        assert torch.equal(sub.x_train[sub.y_train == k], ds.x_train[ds.y_train == k][:2])


def test_subsets_of_mixed_data_are_its_first_images(random_data):
    """CIFAR's official order already mixes the classes: its first n images, as before (the
    quick preset's committed numbers depend on it)."""
    sub = random_data.subset(100, 20)
    assert torch.equal(sub.x_train, random_data.x_train[:100]) and torch.equal(sub.y_test, random_data.y_test[:20])


def test_cifar10_subsets_are_its_first_images(cifar10):
    """The real CIFAR-10 is in mixed order: the quick preset's subsets are unchanged."""
    sub = cifar10.subset(8000, 1000)
    assert torch.equal(sub.x_train, cifar10.x_train[:8000]) and torch.equal(sub.y_test, cifar10.y_test[:1000])


LOOPS = {
    "a link to itself": ("a/again", "."),
    "a link to its parent": ("a/sub/up", ".."),
    "two links to one folder": ("a/more", "../b", "a/again", "../b"),
}


@pytest.mark.parametrize("loop", list(LOOPS))
def test_linked_folders_are_read_once(tmp_path, monkeypatch, loop):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = _folder(tmp_path / "f", classes=("a", "b"))
    pairs = LOOPS[loop]
    for split in ("train", "test"):
        for link, target in zip(pairs[::2], pairs[1::2]):
            (root / split / link).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, root / split / link)
    ds = load_dataset(f"folder:{root}")
    n_a = 8 if loop == "two links to one folder" else 4  # b's images, linked into a, once
    assert (ds.y_train == 0).sum().item() == n_a and (ds.y_train == 1).sum().item() == 4


# ---------------------------------------------------------------------------------------------
# 6, 7. Run state: a lost kept checkpoint, a resume on changed data


@pytest.fixture(scope="module")
def train_args(tiny_overrides):
    def args(npz: Path, out: Path, *extra: str) -> list[str]:
        small = ["data.n_train=128", "data.n_test=32", "train.batch_size=64"]
        return ["train", "--quiet", "--arm", "dai", "--out", str(out),
                *[a for kv in [*tiny_overrides, *small, f"data.dataset=npz:{npz}", *extra] for a in ("--set", kv)]]  # fmt: skip

    return args


def test_a_kept_checkpoint_lost_by_a_kill_is_made_again(tmp_path, capsys, npz, train_args):
    run, log = tmp_path / "run", tmp_path / "log"
    ck = run / "checkpoints"
    env = {**os.environ, "DAINV_TEST_SLOW_SAVE": "600:2"}  # epoch 1: last.pt, then epoch-0001.pt sleeps
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dainv", *train_args(npz, run, "train.keep_epochs=[1]")],
                                stdout=f, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        t0 = time.monotonic()
        while not any(ck.glob(".epoch-0001.pt.*.tmp")):
            assert proc.poll() is None and time.monotonic() - t0 < 180, log.read_text()
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (ck / "epoch-0001.pt").exists()
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    assert rc == 0, text
    assert "epoch-0001.pt (train.keep_epochs) was lost when the run was stopped; made again" in text
    kept = torch.load(ck / "epoch-0001.pt", weights_only=False)
    assert kept["epoch"] == 1 and kept["partial"] is None
    assert "kept_epochs_lost" not in json.loads((run / "meta.json").read_text())


def test_a_kept_checkpoint_that_cannot_be_made_again_is_said_and_reported(tmp_path, capsys, npz, tiny):
    from dainv import report
    from dainv.train import train

    run = tmp_path / "run"
    train(tiny("dai", f"data.dataset=npz:{npz}", "data.n_train=128", "data.n_test=32", "train.batch_size=64",
              "train.keep_epochs=[1]"),
          run, quiet=True)  # fmt: skip
    (run / "checkpoints" / "epoch-0001.pt").unlink()  # lost; last.pt is epoch 2, killed before final.pt
    (run / "checkpoints" / "final.pt").unlink()
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run)
    assert rc == 0, text
    assert "kept checkpoint(s) of epoch(s) 1 (train.keep_epochs) are missing" in text and "cannot be made again" in text
    assert json.loads((run / "meta.json").read_text())["kept_epochs_lost"] == [1]
    gaps = " ".join(report.missing_sentences(report.load_runs([run], tmp_path / "r")).values())
    assert "the kept checkpoint of epoch 1 (`train.keep_epochs`) is not evaluated: its checkpoint was lost" in gaps


def _change(npz: Path, what: str) -> None:
    with np.load(npz) as z:
        a = {k: z[k].copy() for k in z.files}
    if what == "train images":
        a["x_train"][0] ^= 1
    elif what == "test images":
        a["x_test"][-1] ^= 1
    else:
        a["y_train"][:2] = a["y_train"][[1, 0]]
    np.savez(npz, **a)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, npz, tiny) -> Path:
    """A finished 1-epoch run of a copy of :func:`npz` (extended to 2 epochs by the tests)."""
    from dainv.train import train

    root = tmp_path_factory.mktemp("one")
    data = shutil.copy(npz, root / "data.npz")
    train(tiny("dai", f"data.dataset=npz:{data}", "data.n_train=128", "data.n_test=32", "train.batch_size=64",
               "train.epochs=1", "train.milestones=[]"), root / "run", quiet=True)  # fmt: skip
    return root


@pytest.mark.parametrize("what", ["train images", "test images", "labels"])
def test_a_resume_on_changed_data_is_refused(one_epoch, tmp_path, capsys, what):
    root = tmp_path / "r"
    shutil.copytree(one_epoch, root)
    run = root / "run"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["dataset"] = f"npz:{root / 'data.npz'}"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))  # a copy: its own data file
    cfg_state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    cfg_state["config"]["data"]["dataset"] = cfg["data"]["dataset"]
    torch.save(cfg_state, run / "checkpoints" / "last.pt")
    _change(root / "data.npz", what)
    rc, text = _cli(capsys, "train", "--quiet", "--resume", run, "--epochs", "2")
    assert rc == 2 and "dainv: error: " in text and "Traceback" not in text, text
    assert "the data changed since the run started" in text and "--accept-changed-data" in text
    split = "test" if what == "test images" else "train"
    assert f"the {split} images of npz:" in text
    assert json.loads((run / "meta.json").read_text())["status"] == "finished"  # untouched
    if what == "labels":  # the override works, and is recorded
        rc, text = _cli(capsys, "train", "--quiet", "--resume", run, "--epochs", "2", "--accept-changed-data")
        assert rc == 0, text
        meta = json.loads((run / "meta.json").read_text())
        assert meta["data_changed"][-1]["splits"] == "train" and meta["data"]["digest"] != meta["data_changed"][-1]["was"]["digest"]


# ---------------------------------------------------------------------------------------------
# 8. Non-finite weights


def _nan_weights(path: Path, how: str) -> Path:
    """Weights of All-CNN-C with NaN or Inf: a plain state_dict (width 1, as ``--model allcnnc``
    builds it) or a dainv checkpoint."""
    from dainv.checkpoint import model_info, save_checkpoint
    from dainv.models import AllCNNC

    width = 0.125 if how == "a dainv checkpoint" else 1.0
    net = AllCNNC(width=width)
    sd = net.state_dict()
    if how == "all NaN":
        sd = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in sd.items()}
    else:
        sd["blocks.0.0.weight"][0, 0, 0, 0] = float("inf")
    if how == "a dainv checkpoint":
        net.load_state_dict(sd)
        save_checkpoint(path, net, info=model_info("allcnnc", 10, width=width))
    else:
        torch.save(sd, path)
    return path


@pytest.mark.parametrize("how", ["all NaN", "one Inf", "a dainv checkpoint"])
def test_non_finite_weights_are_refused(tmp_path, capsys, npz, how):
    w = _nan_weights(tmp_path / "w.pt", how)
    if how == "a dainv checkpoint":
        args = ["evaluate", w, "--dataset", f"npz:{npz}", "--n-test", "8", "--quiet"]
    else:
        args = ["evaluate", "--model", "allcnnc", "--weights", w, "--data", f"npz:{npz}", "--n-test", "8", "--quiet"]
    rc, text = _cli(capsys, *args)
    assert rc == 2 and "Traceback" not in text, text
    assert "are not finite" in text and "blocks.0.0.weight" in text and "single test image" not in text
    assert not (tmp_path / "w-eval").exists()


# ---------------------------------------------------------------------------------------------
# 9. Interrupted writers: a killed report, --force's trash


class Killed(BaseException):
    """Stands for SIGKILL: no handler runs on its way up."""


@pytest.mark.parametrize("when", ["while drawing the figures", "while writing report.md"])
def test_a_killed_report_leaves_the_previous_report_whole(copy, monkeypatch, when):
    from dainv import report
    from dainv.report import figures
    from test_report import unrendered

    monkeypatch.setattr(figures, "FIGURES", figures.FIGURES[:2])
    monkeypatch.setattr(figures, "render", unrendered)  # what is written matters here, not the pixels
    report.write_report(report.load_reproduction(copy))
    before = {p.relative_to(copy): p.read_bytes() for p in [copy / "results.json", copy / "report.md",
                                                             copy / "report.html", *(copy / "figures").iterdir()]}  # fmt: skip
    (copy / "figures" / "fig1_invariance.png").write_bytes(b"old")  # the previous report's figure
    before[Path("figures/fig1_invariance.png")] = b"old"
    if when == "while drawing the figures":
        real, drawn = figures.render, []

        def render(fig):  # the first figure is drawn and written, the kill comes in the second
            drawn.append(fig)
            if len(drawn) == 2:
                raise Killed
            return real(fig)

        monkeypatch.setattr(figures, "render", render)
    else:
        monkeypatch.setattr("dainv.report.to_markdown", lambda *a: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        report.write_report(report.load_reproduction(copy))
    after = {p.relative_to(copy): p.read_bytes() for p in [copy / "results.json", copy / "report.md",
                                                            copy / "report.html", *(copy / "figures").iterdir()]}  # fmt: skip
    assert after == before
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]


def test_a_killed_reports_leftovers_are_removed_next_time(copy, monkeypatch):
    from dainv import report

    monkeypatch.setattr("dainv.report.figures.FIGURES", [])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = copy / f".report.tmp-{dead.pid}-x"
    (left / "figures").mkdir(parents=True)
    (left / "figures" / "fig1_invariance.png").write_bytes(b"half")
    report.write_report(report.load_reproduction(copy))
    assert not left.exists() and (copy / "report.md").read_text() != "stub"


def test_force_trash_of_a_killed_process_is_removed_at_the_next_start(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trash = tmp_path / f".dainv-trash-{dead.pid}-123"
    (trash / "checkpoints").mkdir(parents=True)
    (trash / "checkpoints" / "final.pt").write_bytes(b"x" * 100)
    alive = tmp_path / f".dainv-trash-{os.getpid()}-456"  # a --force deleting right now: left alone
    alive.mkdir()
    runio.prepare_run_dir(tmp_path / "new", force=False)
    assert not trash.exists() and alive.exists()


def test_digest_identifies_the_images(random_data):
    """The data identity of meta.json and summary.json: content, not names."""
    again = random_dataset(256, 128)
    assert again.digest("train") == random_data.digest("train")
    x = again.x_train.clone()
    x[0, 0, 0, 0] ^= 1
    from dataclasses import replace

    assert replace(again, x_train=x).digest("train") != random_data.digest("train")
    assert again.digest("test") == random_data.digest("test")
