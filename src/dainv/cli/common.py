"""Pieces the subcommands share: the arms' help text, feature probes and the summary printout."""

from __future__ import annotations

import inspect
from typing import Any

from dainv.config import ARMS

ARM_HELP = ", ".join(f"{k} (M={v['views']}, alpha={v['alpha']:g})" for k, v in ARMS.items())


def _supports(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (features that other parts add over time)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _median_row(stats: Any, layers: list[str]) -> dict[str, float]:
    """``{layer: median}`` from either ``{layer: median}`` or a statistics dict with ``median``."""
    if isinstance(stats, dict) and isinstance(stats.get("median"), dict):
        stats = stats["median"]
    return {k: stats.get(k, float("nan")) for k in layers} if isinstance(stats, dict) else {}


def _print_summary(s: dict[str, Any]) -> None:
    inv = s["invariance"]
    acc = s["accuracy"]
    layers = list(inv["layers"])
    print(
        "accuracy: "
        + ", ".join(f"{k} {v:.4f}" for k, v in acc.items() if isinstance(v, (int, float)))
    )
    print("median invariance per layer:")
    print("  " + " ".join(f"{k:>7}" for k in layers))
    print("  " + " ".join(f"{inv['median'][k]:7.3f}" for k in layers))
    pt = s.get("per_transform")
    if pt:
        cols = {"all": inv["median"], **{t: _median_row(v, layers) for t, v in pt.items()}}
        w = max(7, *(len(c) for c in cols)) + 1
        lw = max(5, *(len(x) for x in layers))
        print("median invariance per layer and transformation (docs/method.md §6):")
        print("  " + f"{'layer':<{lw}}" + "".join(f"{c:>{w}}" for c in cols))
        for layer in layers:
            print(
                "  "
                + f"{layer:<{lw}}"
                + "".join(f"{cols[c].get(layer, float('nan')):>{w}.3f}" for c in cols)
            )
