"""The README's examples, as a new user meets them: every Python block runs as written, and every
``dainv …`` / ``make …`` command line of a bash block is one the CLI / Makefile accepts."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dainv.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _blocks(lang: str) -> list[tuple[str, str]]:
    """(the section heading above, code) of every fenced block in ``lang``."""
    out, heading = [], "top"
    for m in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", README, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        elif m.group(2) == lang:
            out.append((heading, m.group(3)))
    return out


PYTHON = _blocks("python")
BASH = _blocks("bash")


def test_readme_has_the_sections_users_look_for():
    for title in (
        "Install",
        "Quick start",
        "Use it on your own network",
        "Use it on your own data",
        "The paper's full experiment on a GPU",
        "How to cite",
    ):
        assert re.search(rf"^## {re.escape(title)}$", README, re.M), title
    assert "SPEC" not in README  # users cite docs/method.md
    assert len(PYTHON) >= 3 and len(BASH) >= 4


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """Every Python block in a fresh interpreter and an empty folder of its own, all started at
    once (they run side by side, one thread each); ``[(process, folder)]`` in README order."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    procs = []
    for i, (_, code) in enumerate(PYTHON):
        folder = tmp_path_factory.mktemp(f"block{i}")
        with open(folder / ".stderr", "w") as err:
            procs.append((subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=env, start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=err), folder))  # fmt: skip
    yield procs
    for proc, _ in procs:  # a block not waited for (a test deselected or failed): it and its children
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("index", range(len(PYTHON)), ids=[f"{h}-{i}" for i, (h, _) in enumerate(PYTHON)])
def test_python_block_runs_as_written(index, started):
    proc, folder = started[index]
    rc = proc.wait(timeout=300)
    assert rc == 0, f"README block under '{PYTHON[index][0]}' failed:\n{(folder / '.stderr').read_text()[-3000:]}"


def _command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for heading, code in BASH:
        for line in code.splitlines():
            line = line.split(" #")[0].strip()
            if not line:
                continue
            words = shlex.split(line)
            if words[0] == "torchrun":
                words = words[words.index("dainv") :]
            if words[0] in ("dainv", "make"):
                lines.append((heading, words))
    return lines


COMMANDS = _command_lines()


@pytest.mark.parametrize("heading,words", COMMANDS, ids=[" ".join(w)[:60] for _, w in COMMANDS])
def test_bash_command_is_accepted(heading, words):
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M)
        assert words[1] in targets, f"README '{heading}': make {words[1]} is not a Makefile target"
        return
    if words[1:] in (["--help"],):
        return
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as e:  # argparse refuses: the README shows a command that does not exist
        pytest.fail(f"README '{heading}': `{' '.join(words)}` is refused by the CLI (exit {e.code})")


def test_public_modules_are_attributes_of_the_package():
    """As the README writes them: ``import dainv`` then ``dainv.models.register_model`` etc."""
    code = (
        "import dainv\n"
        "assert callable(dainv.models.register_model) and callable(dainv.checkpoint.save_checkpoint)\n"
        "assert callable(dainv.invariance.DAILoss) and callable(dainv.evaluate.evaluate)\n"
        "try:\n    dainv.not_a_module\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _quick_table() -> dict[str, list[str]]:
    """The README's table of what `quick` shows: {row name: cells}."""
    text = (REPO / "README.md").read_text()
    start = text.index("| median invariance (Eq. 2) |")
    rows = {}
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_readme_quick_numbers_are_docs_quick_results():
    """Every number of the README's `quick` table is the committed report's (docs/quick)."""
    res = json.loads((REPO / "docs" / "quick" / "results.json").read_text())
    rows = _quick_table()
    layers = rows["median invariance (Eq. 2)"][:-1]
    for arm, row_name in (("baseline", "baseline"), ("dai", "DAI"), ("control", "control")):
        cells = [c.strip("*") for c in rows[row_name]]
        want = [f"{res['invariance'][arm]['layers'][la]['median']:.3f}" for la in layers]
        assert cells[:-1] == want, arm
        assert cells[-1] == f"{100 * res['accuracy'][arm]['single_view']['mean']:.1f} %", arm
    diffs = rows["DAI − baseline, 95 % CI"][1:-1]
    ci = res["differences"]["vs_baseline"]["dai − baseline"]
    for la, cell in zip(layers[1:], diffs):
        c = ci[la]
        assert cell == f"{c['diff']:+.3f} ±{(c['hi'] - c['lo']) / 2:.3f}", la
