"""Docs and README that no longer matched the code or the committed results, one group per
fault class:

1. where the data come from: the CLI's default folder and the Makefile's, each said where it
   is documented;
2. a mistyped data root: refused before any download unless ``--download`` (train, evaluate,
   reproduce, ``python -m dainv.data``), the default folder excepted;
3. numbers in the docs: each tied to the committed results (``docs/*/results.json``) or
   benchmark records (``benchmarks/results/*.jsonl``) it quotes, and what the code does
   (``train.batch_size`` is the global batch);
4. code names in backticks that look like dainv's exist in ``src/dainv``;
5. user docs tell what is, not how they were made, and show no machine's paths; the report
   generator writes none either;
6. the README's own commands: a checkpoint the run did not keep is refused naming
   ``train.keep_epochs`` (``import dainv`` then ``dainv.models.register_model`` …:
   ``test_readme.py::test_public_modules_are_attributes_of_the_package``).

Developer docs (``docs/paper/PLAN.md``, ``DEVELOPERS.md``) are exempt from 4 and 5.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import re
import shutil
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch
import yaml

from dainv import cli
from dainv.cli.parser import DOWNLOAD_HELP, EPILOG
from dainv.config import RunConfig, dump_yaml, flat_items, load_config, to_dict
from dainv.data import cifar, default_data_root
from dainv.data.__main__ import main as data_main
from dainv.train import split_batch

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
#: What a user reads: the README, docs/*.md and the committed reports' READMEs and reports.
USER_DOCS = [README, *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "docs").glob("*/README.md"))]
REPORTS = sorted((REPO / "docs").glob("*/report.md"))


def _text(path: Path) -> str:
    """The file's text with every run of whitespace as one space (docs wrap their lines)."""
    return re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))


def _cli(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out + err


# ---------------------------------------------------------------------------------------------
# 1. Where the data come from: the CLI's default and the Makefile's, each said where documented
# ---------------------------------------------------------------------------------------------


def test_the_cli_default_data_folder_is_the_one_the_docs_name(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_data_root() == tmp_path / ".cache" / "dainv"
    for where, text in (("README", _text(README)), ("dainv --help", EPILOG), ("--download", DOWNLOAD_HELP)):
        assert "~/.cache/dainv" in text, where
    assert "The Makefile sets `DAINV_DATA` to `../shared/data` only where that folder holds CIFAR-10" in _text(README)


def _make_data_root(folder: Path) -> str:
    shown = "show: ; @echo \"[$(DAINV_DATA)]\""
    proc = subprocess.run(["make", "-s", "-C", str(folder), "--eval", shown, "show"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    return proc.stdout.strip()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_the_makefile_reads_the_shared_data_only_where_it_is(tmp_path):
    """A fresh clone (no ../shared/data) gets dainv's own default, not a path outside it."""
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "Makefile", clone / "Makefile")
    assert _make_data_root(clone) == "[]"
    (tmp_path / "shared" / "data" / "cifar-10-batches-py").mkdir(parents=True)
    assert _make_data_root(clone) == f"[{tmp_path / 'shared' / 'data'}]"
    assert "~/.cache/dainv" in (REPO / "Makefile").read_text()  # said where it is set


# ---------------------------------------------------------------------------------------------
# 2. A mistyped data root: refused before any download, unless --download
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def weights(tmp_path) -> Path:
    from dainv.models import build_model

    path = tmp_path / "net.pt"
    torch.save(build_model("allcnnc", 10, width=0.125).state_dict(), path)
    return path


def _data_command(name: str, typo: Path, tmp_path: Path, weights: Path, tiny_overrides) -> list:
    sets = [x for o in tiny_overrides for x in ("--set", o)]
    return {
        "train": ["train", "--quiet", "--arm", "dai", "--out", tmp_path / "run", "--data-root", typo, *sets],
        "evaluate": ["evaluate", "--model", "allcnnc", "--weights", weights, "--data", "cifar10",
                     "--data-root", typo, "--quiet"],
        "reproduce": ["reproduce", "--preset", "quick", "--out", tmp_path / "repro", "--data-root", typo, "--quiet"],
        "data": ["cifar10", "--data-root", typo],
    }[name]  # fmt: skip


def _run_data_command(name: str, argv: list, capsys) -> tuple[int, str]:
    if name == "data":  # python -m dainv.data
        rc = data_main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out + err
    return _cli(capsys, *argv)


COMMANDS = ["train", "evaluate", "reproduce", "data"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_data_root_is_refused_before_any_download(command, tmp_path, capsys, monkeypatch, weights, tiny_overrides):
    def no_network(url, dest):
        raise AssertionError(f"downloaded {url} into {dest}")

    monkeypatch.setattr(cifar, "_download", no_network)
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "dataa"
    rc, text = _run_data_command(command, _data_command(command, typo, tmp_path, weights, tiny_overrides), capsys)
    assert rc == 2, text
    flat = re.sub(r"\s+", " ", text)
    assert str(typo) in flat and "--download" in flat and "a typo?" in flat, flat
    assert not typo.exists()  # nothing created there


@pytest.mark.parametrize("command", COMMANDS)
def test_download_goes_into_the_given_root_with_the_flag(command, tmp_path, capsys, monkeypatch, weights, tiny_overrides):
    calls = []

    def offline(url, dest):
        calls.append(Path(dest).parent)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "_download", offline)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "new-root"
    argv = [*_data_command(command, root, tmp_path, weights, tiny_overrides), "--download"]
    rc, text = _run_data_command(command, argv, capsys)
    assert rc == 2 and "downloading it failed (<urlopen error offline>)" in text, text
    assert calls == [root]


@pytest.mark.parametrize("how", ["default", "DAINV_DATA"])
def test_only_the_default_folder_downloads_without_the_flag(how, tmp_path, capsys, monkeypatch):
    calls = []

    def offline(url, dest):
        calls.append(Path(dest).parent)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(cifar, "_download", offline)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if how == "DAINV_DATA":  # an environment variable is a path the user typed too
        monkeypatch.setenv("DAINV_DATA", str(tmp_path / "typo"))
    else:
        monkeypatch.delenv("DAINV_DATA", raising=False)
    assert data_main(["cifar10"]) == 2
    err = capsys.readouterr().err
    if how == "default":
        assert calls == [tmp_path / "cache" / "dainv"] and "downloading it failed" in err
    else:
        assert calls == [] and "--download" in err and not (tmp_path / "typo").exists()


# ---------------------------------------------------------------------------------------------
# 3. Numbers in the docs are the committed results' and records', and what the code does
# ---------------------------------------------------------------------------------------------


def _records(name: str) -> list[dict]:
    path = REPO / "benchmarks" / "results" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _results(name: str) -> dict:
    return json.loads((REPO / "docs" / name / "results.json").read_text())


def _steps(name: str, precision: str, compiled: bool = False) -> list[dict]:
    return [r for r in _records(name) if r["bench"] == "train_step" and r["precision"] == precision
            and r["compile"] == compiled]  # fmt: skip


def test_readme_gpu_timings_are_one_runs_records():
    """Samples/s, epoch times, the paper's 350 epochs and the ratio, all from one H200 record
    (the arms timed together), not one machine's baseline beside another's DAI."""
    rec = [r for r in _records("2026-11-26-h200.jsonl") if r["bench"] == "gpu" and r.get("samples_per_s")
           and r["numeric"] == "tf32" and r["mode"] == "eager"][-1]["samples_per_s"]  # fmt: skip
    b, d, epoch, paper = rec["baseline"], rec["dai"], 391 * 128, 350 * 391 * 128
    text = _text(README)
    assert f"{b:,.0f} (baseline) and {d:,.0f} (DAI) samples/s, i.e. {epoch / b:.1f} s and {epoch / d:.1f} s per 391-step epoch" in text
    assert f"≈ {paper / b / 60:.0f} min (baseline) and {paper / d / 60:.0f} min (DAI)" in text
    assert f"is {b / d:.2f}× the baseline's there" in text
    assert "2.2 s (baseline) to 3.6 s (DAI)" not in text


def test_quick_epoch_times_are_the_committed_reports():
    tt = _results("quick")["training_time"]
    med = {a: s["median_epoch_time_s"] for a, s in tt["arms"].items()}
    over = {a: o["percent"] for a, o in tt["overhead_vs_baseline"].items()}
    assert (f"a DAI epoch took {med['dai']:.2f} s against the baseline's {med['baseline']:.2f} s "
            f"(+{over['dai']:.0f} %") in _text(README)  # fmt: skip
    assert (f"{med['baseline']:.2f} s for the baseline, {med['dai']:.2f} s for DAI (+{over['dai']:.1f} %) and "
            f"{med['control']:.2f} s for the control (+{over['control']:.1f} %") in _text(REPO / "docs" / "performance.md")  # fmt: skip
    for doc in USER_DOCS:  # the overhead of an older report, quoted as this one's
        assert "+9.4 %" not in _text(doc), doc.name


def test_cpu_step_ratios_are_the_latest_records():
    fp32, bf16 = _steps("2026-12-06-vm.jsonl", "fp32")[-1], _steps("2026-12-06-vm.jsonl", "bf16")[-1]
    r32, r16 = 1 + fp32["dai_overhead"], 1 + bf16["dai_overhead"]
    assert f"{r32:.2f}× the baseline's in fp32 and {r16:.2f}× in bf16" in _text(README)
    assert (f"{r32:.3f} × in fp32 ({fp32['dai_step_ms']:,.0f} vs {fp32['baseline_step_ms']:,.0f} ms) and "
            f"{r16:.3f} × in bf16 ({bf16['dai_step_ms']:,.0f} vs {bf16['baseline_step_ms']:,.0f} ms)") in _text(REPO / "docs" / "performance.md")  # fmt: skip


def test_bf16_on_an_avx2_cpu_is_as_slow_as_the_records_say():
    fp32, bf16 = _steps("2026-11-25-vm.jsonl", "fp32")[0], _steps("2026-11-25-vm.jsonl", "bf16")[0]
    assert not any(r["machine"]["bf16_native"] for r in (fp32, bf16))
    factor = bf16["baseline_step_ms"] / fp32["baseline_step_ms"]
    numbers = f"{bf16['baseline_step_ms'] / 1000:.1f} s against {fp32['baseline_step_ms'] / 1000:.2f} s, about {factor:.0f}×"
    assert numbers in _text(REPO / "docs" / "method.md")
    perf = _text(REPO / "docs" / "performance.md")
    assert f"about {factor:.0f} × slower than in fp32" in perf and f"bf16 is {factor:.0f}× slower" in perf
    native = _steps("2026-11-26-vm.jsonl", "fp32")[-1]["baseline_step_ms"] / _steps("2026-11-26-vm.jsonl", "bf16")[-1]["baseline_step_ms"]
    assert f"≈ {native:.1f} × less time than fp32" in perf
    for doc in USER_DOCS:
        assert not re.search(r"about 3 ?× (slower|in the project)", _text(doc)), doc.name


def test_h200_numbers_in_performance_md_are_the_records():
    perf = _text(REPO / "docs" / "performance.md")
    for r in _records("2026-11-26-h200.jsonl"):
        for arm, v in (r.get("samples_per_s") or {}).items():
            assert f"{v:,.0f}" in perf, (r["numeric"], r["mode"], arm)
        if r.get("dai_overhead") is not None:  # the DAI / baseline column
            assert f"{1 + r['dai_overhead']:.2f}" in perf, (r["numeric"], r["mode"])


def test_run_numbers_in_the_readme_are_the_committed_reports():
    text = _text(README)
    long = _results("cpu-long")
    final = long["gap_vs_epochs"]["pairs"]["dai − baseline"]
    at30 = [final[la][-1]["diff"] for la in ("conv6", "conv7", "conv8", "conv9")]
    assert f"by **{min(at30):+.2f} to {max(at30):+.2f}** at epoch 30" in text
    c7 = final["conv7"][-1]
    assert f"conv7 {c7['diff']:+.3f} [{c7['lo']:+.3f}, {c7['hi']:+.3f}]" in text
    acc = {a: 100 * v["single_view"]["mean"] for a, v in long["accuracy"].items()}
    assert f"baseline {acc['baseline']:.1f} %, DAI {acc['dai']:.1f} %" in text
    walls = [long["runs"][a]["0"]["wall_time_s"] / 60 for a in ("baseline", "dai")]
    assert f"{walls[0]:.0f} and {walls[1]:.0f} min of wall time" in text
    abl = _results("ablation")["gap_vs_epochs"]["pairs"]
    c8 = abl["dai − baseline"]["conv8"][-1]
    assert f"{c8['diff']:+.3f} [{c8['lo']:+.3f}, {c8['hi']:+.3f}] at step 20,000" in text
    assert f"`dai-sc` {abl['dai-sc − baseline']['conv8'][-1]['diff']:+.3f}" in text
    dai = _results("ablation")["invariance"]["dai"]["layers"]
    assert f"{dai['conv7']['median']:.3f} / {dai['conv8']['median']:.3f}" in text
    h200 = _results("h200-paper-50ep")["gap_vs_epochs"]["pairs"]["dai − baseline"]
    deep = [h200[la][-1]["diff"] for la in ("conv7", "conv8", "conv9")]
    assert f"DAI − baseline {min(deep):+.2f} to {max(deep):+.2f} at conv7–conv9 at epoch 50" in text


def test_train_batch_size_is_the_global_batch_as_every_doc_says():
    assert split_batch(128, 8, 4) == (32, 4)  # 4 processes: 32 samples (4 seeds × 8 views) each
    for doc in USER_DOCS:
        assert not re.search(r"batch_size`? is per[ -]rank|per rank under DDP", _text(doc)), doc.name
    assert "`batch_size` is the **global** batch" in _text(REPO / "docs" / "method.md")
    assert "`train.batch_size` is the **global** batch" in _text(README)


# ---------------------------------------------------------------------------------------------
# 4. Code names in backticks exist in src/dainv
# ---------------------------------------------------------------------------------------------

#: Names in backticks that look like code but are not dainv's, each with what it is.
NOT_DAINV = {
    "ImageDataGenerator": "Keras's augmentation class (the authors' pipeline)",
    "MultiStepLR": "torch.optim.lr_scheduler.MultiStepLR",
    "TorchDispatchMode": "torch.utils._python_dispatch.TorchDispatchMode",
    "_spread": "the suffix of a benchmark record's fields (`baseline_step_ms_spread`)",
    "model.tap_names": "the attribute of any tapped model instance (models.base.TappedModel)",
}
_FILE = re.compile(r"\.(py|md|json|jsonl|yaml|npz|pt|sh|html|png|svg|txt|sha256|md5|gz|xz)$")
_CONFIG_SECTIONS = {k.split(".")[0] for k in flat_items(to_dict(RunConfig()))}
_CONFIG_KEYS = set(flat_items(to_dict(RunConfig())))


def _members(cls: ast.ClassDef) -> set[str]:
    out = set()
    for node in ast.walk(cls):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node is not cls:
            out.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                out.add(t.id)
            elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                out.add(t.attr)
    return out


def _module_names(tree: ast.Module) -> dict[str, tuple]:
    """Top-level names of a module: ("def"|"var",), ("class", node) or ("import", target);
    dainv imports absolutely (``from dainv.x import y``)."""
    names: dict[str, tuple] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = ("def",)
        elif isinstance(node, ast.ClassDef):
            names[node.name] = ("class", node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = ("var",)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("dainv"):
            for a in node.names:
                names[a.asname or a.name] = ("import", f"{node.module}.{a.name}")
    return names


class CodeIndex:
    """dainv's modules, their top-level names and classes' members, read with ``ast`` (no import)."""

    def __init__(self, src: Path) -> None:
        self.modules: dict[str, dict[str, tuple]] = {}
        self.classes: dict[str, list[ast.ClassDef]] = {}
        self.anywhere: set[str] = set()
        for path in sorted(src.rglob("*.py")):
            rel = path.relative_to(src.parent).with_suffix("")
            mod = ".".join(rel.parts).removesuffix(".__init__")
            tree = ast.parse(path.read_text(encoding="utf-8"))
            self.modules[mod] = _module_names(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(node.name, []).append(node)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    self.anywhere.add(node.name)
            self.anywhere |= {n for names in self.modules.values() for n in names}

    def class_members(self, name: str, seen: frozenset = frozenset()) -> set[str]:
        out: set[str] = set()
        for cls in self.classes.get(name, []):
            out |= _members(cls)
            for base in cls.bases:
                if isinstance(base, ast.Name) and base.id not in seen:
                    out |= self.class_members(base.id, seen | {name})
        return out

    def _entry(self, mod: str, name: str, depth: int = 0) -> tuple | None:
        """What ``mod.name`` is, following ``from dainv.x import name`` re-exports."""
        if f"{mod}.{name}" in self.modules:
            return ("module", f"{mod}.{name}")
        entry = self.modules.get(mod, {}).get(name)
        if entry and entry[0] == "import" and depth < 10:
            target_mod, _, target = entry[1].rpartition(".")
            return self._entry(target_mod, target, depth + 1)
        return entry

    def resolves(self, mod: str, parts: list[str]) -> bool:
        """Whether ``mod.parts[0].parts[1]…`` names something dainv defines."""
        current: tuple | None = ("module", mod)
        for p in parts:
            if current is None:
                return False
            if current[0] == "module":
                current = self._entry(current[1], p)
            elif current[0] == "class":
                current = ("member",) if p in self.class_members(current[1].name) else None
            else:
                return False  # an attribute of a function or variable: not checkable, so not accepted
        return current is not None


def _spans(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return re.findall(r"`([^`\n]+)`", text)


def _problem(index: CodeIndex, span: str) -> str | None:
    """Why ``span`` names dainv code that does not exist (None: it exists, or it is not a dainv name)."""
    name = re.sub(r"\(.*\)$", "", span.strip())
    if span in NOT_DAINV or name in NOT_DAINV or _FILE.search(name) or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", name):
        return None
    parts = name.split(".")
    short = {m.rsplit(".", 1)[-1]: m for m in sorted(index.modules, key=len)}
    if parts[0] == "dainv":
        ok = index.resolves("dainv", parts[1:])
    elif parts[0] in short and len(parts) > 1:
        ok = name in _CONFIG_KEYS or any(index.resolves(m, parts[1:]) for m in index.modules if m.rsplit(".", 1)[-1] == parts[0])
    elif parts[0] in _CONFIG_SECTIONS and len(parts) > 1:
        ok = name in _CONFIG_KEYS
    elif parts[0].startswith("_") or re.fullmatch(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*", parts[0]):
        if hasattr(builtins, parts[0]) or hasattr(torch.nn, parts[0]):  # Python's and torch.nn's own
            return None
        ok = parts[0] in index.anywhere and all(p in index.class_members(parts[0]) for p in parts[1:2])
    else:
        return None  # not a name of dainv's: torch.*, JSON keys, plain words
    return None if ok else f"`{span}`"


def test_code_names_in_the_docs_exist():
    index = CodeIndex(REPO / "src" / "dainv")
    missing = {doc.relative_to(REPO).as_posix(): sorted({p for s in _spans(doc) if (p := _problem(index, s))})
               for doc in USER_DOCS}  # fmt: skip
    assert not {k: v for k, v in missing.items() if v}, missing


def test_the_name_checker_catches_a_missing_name():
    """The checker itself: names that do not exist are caught, in each form it checks."""
    index = CodeIndex(REPO / "src" / "dainv")
    for bad in ("dainv.invariance._DAILoss", "_DAILoss", "DAILossX", "Trainer.no_such_step", "invariance.nothing",
                "train.no_such_key", "dainv.nothing"):  # fmt: skip
        assert _problem(index, bad), bad
    for good in ("dainv.invariance.DAILoss", "invariance.loss._DAITerms", "Trainer.train_step", "DAILoss(fused=…)",
                 "train.keep_epochs", "data.registry", "models.base.TapMixin", "config.ARMS", "Dataset.subset",
                 "torch.compile", "accuracy.single_view", "config.yaml", "None"):  # fmt: skip
        assert _problem(index, good) is None, good


def test_not_dainv_names_are_what_they_say():
    for name, what in NOT_DAINV.items():
        if what.startswith("torch."):
            module, _, attr = what.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), name


# ---------------------------------------------------------------------------------------------
# 5. No narration of how the docs were made, no machine's paths; the report writes none
# ---------------------------------------------------------------------------------------------

NARRATION = re.compile(
    r"\blent\b|\bsessions?\b|\$OUT\b|performance issue|added by hand|by hand \(|\bissue \d+|\(issue\b|"
    r"device time|\bthis call\b|next allocation|GPU allocation",
    re.I,
)
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:work|home|tmp)/")


@pytest.mark.parametrize("doc", [*USER_DOCS, *REPORTS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_user_docs_do_not_narrate_how_they_were_made(doc):
    text = doc.read_text(encoding="utf-8")
    found = [m.group(0) for m in NARRATION.finditer(text)] + [m.group(0) for m in ABSOLUTE.finditer(text)]
    assert not found, found


def test_committed_reports_hold_no_machine_paths():
    files = [p for d in (REPO / "docs").iterdir() if d.is_dir() and d.name != "paper"
             for p in d.glob("*") if p.suffix in (".md", ".html", ".json")]  # fmt: skip
    assert files
    bad = {p.relative_to(REPO).as_posix(): ABSOLUTE.findall(p.read_text(encoding="utf-8")) for p in files}
    assert not {k: v for k, v in bad.items() if v}


def test_the_report_writes_no_machine_paths(tmp_path, monkeypatch):
    """Run folders given by absolute paths, evaluated from absolute checkpoint paths, on an npz
    file named by its absolute path: the report names folders and files, never those paths."""
    from dainv import report
    from test_report import make_run, unrendered

    monkeypatch.setattr("dainv.report.figures.render", unrendered)  # this test reads the md, html, json

    runs = []
    for arm in ("baseline", "dai"):
        run = make_run(tmp_path / "runs", arm, 0, epoch_times=[10.0, 10.0])
        summary = json.loads((run / "eval" / "summary.json").read_text())
        summary["checkpoint"]["path"] = str(run / "checkpoints" / "final.pt")
        (run / "eval" / "summary.json").write_text(json.dumps(summary))
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["data"]["dataset"] = f"npz:{tmp_path / 'data' / 'mine.npz'}"
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        runs.append(run.absolute())
    out = report.compare_runs(runs, tmp_path / "cmp").parent
    for name in ("report.md", "report.html", "results.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(tmp_path) not in text, name
    assert "npz:mine.npz" in (out / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# 6. The README's own commands
# ---------------------------------------------------------------------------------------------


def test_a_checkpoint_the_run_did_not_keep_names_train_keep_epochs(tmp_path, capsys):
    """`dainv evaluate runs/dai --checkpoint epoch-0005` after the README's `dainv train --preset
    quick --arm dai --out runs/dai` (quick keeps no epochs)."""
    readme = _text(README)
    assert "dainv train --preset quick --arm dai --out runs/dai" in readme
    assert "dainv evaluate runs/dai --checkpoint epoch-0005" in readme
    cfg = load_config("quick", arm="dai")
    assert cfg.train.keep_epochs == []
    run = tmp_path / "runs" / "dai"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "meta.json").write_text(json.dumps({"status": "finished"}))
    rc, text = _cli(capsys, "evaluate", run, "--checkpoint", "epoch-0005")
    assert rc == 2, text
    flat = re.sub(r"\s+", " ", text)
    assert "train.keep_epochs" in flat and "this run: none" in flat and 'train.keep_epochs=[5]' in flat, flat
    assert "Traceback" not in text
