"""Pieces the subcommands share: the arms' help text, feature probes and the summary printout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dainv.config import ARMS

#: When the command started (imported with the CLI): ``--time-limit`` counts from here.
T0 = time.monotonic()

#: ``--download`` of every command that takes a data root (train, evaluate, reproduce and
#: ``dainv data``); the rule itself is :func:`dainv.data.cifar.may_download`.
DOWNLOAD_HELP = (
    "download CIFAR (about 163 MB) into --data-root / $DAINV_DATA when it is missing there; "
    "without it dainv downloads only into the default data folder (~/.cache/dainv)"
)

ARM_HELP = ", ".join(f"{k} (M={v['views']}, alpha={v['alpha']:g})" for k, v in ARMS.items())


def _median_row(stats: Any, layers: list[str]) -> dict[str, float]:
    """``{layer: median}`` from either ``{layer: median}`` or a statistics dict with ``median``."""
    if isinstance(stats, dict) and isinstance(stats.get("median"), dict):
        stats = stats["median"]
    return {k: stats.get(k, float("nan")) for k in layers} if isinstance(stats, dict) else {}


def _cell(v: Any, w: int) -> str:
    return f"{v:>{w}.3f}" if isinstance(v, (int, float)) else f"{'undef':>{w}}"


def _print_summary(s: dict[str, Any]) -> None:
    """Accuracy and medians (one formatter: :func:`dainv.measure.format_summary`), then the
    layer × transformation table when the evaluation has one."""
    from dainv.measure import format_summary

    print(format_summary(s))
    inv, pt = s["invariance"], s.get("per_transform")
    if not pt:
        return
    layers = list(inv["layers"])
    cols = {"all": inv["median"], **{t: _median_row(v, layers) for t, v in pt.items()}}
    w = max(7, *(len(c) for c in cols)) + 1
    lw = max(5, *(len(x) for x in layers))
    print("median invariance per layer and transformation (docs/method.md §6):")
    print("  " + f"{'layer':<{lw}}" + "".join(f"{c:>{w}}" for c in cols))
    for layer in layers:
        print("  " + f"{layer:<{lw}}" + "".join(_cell(cols[c].get(layer), w) for c in cols))


def _print_report(md: Path) -> None:
    """How a command that wrote a report ends: its one-line result (``results.json``'s
    ``headline``, the line at the top of the report) and the paths of report.md and report.html."""
    try:
        line = json.loads((Path(md).parent / "results.json").read_text(encoding="utf-8")).get("headline")
    except (OSError, ValueError, AttributeError):
        line = None
    if line:
        print(line)
    print(f"report: {md}")
    print(f"report: {Path(md).with_suffix('.html')}")
