"""Colours, labels and rendering shared by the report's figures."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from dainv.config import ARMS
from dainv.report.load import Reproduction, finite, get

DPI = 150
# Paul Tol's colour-blind-safe palette, in the order of dainv.config.ARMS; other arms get the rest.
_PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")


def arm_color(arms: Sequence[str], arm: str) -> str:
    order = [*ARMS, *(a for a in arms if a not in ARMS)]
    return _PALETTE[order.index(arm) % len(_PALETTE)] if arm in order else "#777777"


def arm_label(repro: Reproduction, arm: str) -> str:
    """``dai (M=8, α=0.1)`` from the arm's config (nothing added when the config lacks them)."""
    for r in repro.results(arm):
        views, alpha = get(r.config, "train", "views"), get(r.config, "train", "alpha")
        bits = ([f"M={views:g}"] if finite(views) else []) + ([f"α={alpha:g}"] if finite(alpha) else [])
        if bits:
            return f"{arm} ({', '.join(bits)})"
    return arm


def seed_text(seeds: Sequence[Any], pooled: str = "") -> str:
    seeds = list(seeds)
    if not seeds:
        return "no seeds"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(str(s) for s in seeds)}{pooled}"


def new_figure(figsize: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def render(fig) -> tuple[bytes, bytes]:
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    fig.set_layout_engine("none")  # laid out by the first save; keeps the SVG identical
    fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def plain_log_labels(ax, lo: float, hi: float) -> None:
    """Label a log y axis with plain numbers (0.3, 0.5, 1) instead of 3×10⁻¹."""
    from matplotlib.ticker import FuncFormatter

    decades = math.log10(hi / lo)
    keep = set(range(1, 10)) if decades < 0.7 else ({2, 3, 5} if decades < 2 else set())

    def minor(v: float, _pos: int) -> str:
        mant = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if mant in keep else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def layer_colors(layers: Sequence[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {la: cmap(i / max(1, len(layers) - 1) * 0.92) for i, la in enumerate(layers)}
