"""The reproduction report (modules: docs/architecture.md). Every number comes from the loaded files, except the
paper's, labelled as such; missing, unfinished or stale runs are reported as such, never filled in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dainv import runio
from dainv.report.figures import FIGURE_NAMES, make_figures
from dainv.report.load import Reproduction, load_reproduction, load_run, load_runs
from dainv.report.paper import PAPER_ACCURACY, PAPER_MEDIAN_LAYERS, PAPER_MEDIANS
from dainv.report.render import (
    collect_results,
    finding_layers,
    findings,
    headline,
    jsonable,
    missing_sentences,
    to_html,
    to_markdown,
)
from dainv.report.stats import overhead_stats

__all__ = ["PAPER_ACCURACY", "PAPER_MEDIANS", "PAPER_MEDIAN_LAYERS", "FIGURE_NAMES", "load_run", "load_runs",
           "load_reproduction", "overhead_stats", "missing_sentences", "finding_layers", "findings", "headline",
           "collect_results", "write_report", "build_report", "compare_runs", "is_reproduction_dir"]

#: What a report consists of: replaced together, never a mix of an old and a new report.
REPORT_FILES = ("figures", "results.json", "report.html", "report.md")


def write_report(repro: Reproduction, out_dir: str | Path | None = None) -> Path:
    """Write the report of ``repro`` into ``out_dir`` (default ``repro.path``); returns ``report.md``. Staged in a
    hidden folder, moved into place once complete (``report.md`` last): a killed report leaves the previous one."""
    out = Path(out_dir) if out_dir is not None else repro.path
    res = collect_results(repro)
    with runio.staging_folder(out / "report") as tmp:
        figs = make_figures(repro, tmp / "figures", res)
        (tmp / "figures").mkdir(exist_ok=True)
        res["figures"] = {f.name: {"files": [p.name for p in f.paths], "note": f.note} for f in figs}
        text = json.dumps(jsonable(res), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        runio.atomic_write_text(tmp / "results.json", text)
        md = to_markdown(repro, res, figs)
        runio.atomic_write_text(tmp / "report.md", md)
        title = f"DAI {'comparison' if repro.adhoc else 'reproduction report'} — {repro.setting}"
        runio.atomic_write_text(tmp / "report.html", to_html(md, title, tmp))
        runio.remove_leftovers(out / "figures")
        runio.swap_in(tmp / "figures", out / "figures")
        for name in REPORT_FILES[1:]:
            runio.move_into(tmp / name, out / name)
    return out / "report.md"


def build_report(repro_dir: str | Path) -> Path:
    """Read the reproduction folder and write its report into it."""
    return write_report(load_reproduction(repro_dir))


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Report on any run folders side by side (arms from their configs: ``load.infer_arm``)."""
    return write_report(load_runs(run_dirs, out_dir), out_dir)


def is_reproduction_dir(path: str | Path) -> bool:
    return (Path(path) / "reproduce.json").is_file()
