"""The report's figures: a registry of (name, title, caption, draw function, why missing; how to add one:
docs/architecture.md), each written atomically as PNG and SVG with shared colours, labels and layout."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from dainv import runio
from dainv.config import ARMS
from dainv.report.load import Reproduction, finite, get, order_layers
from dainv.report.paper import PAPER_ACCURACY, PAPER_EPOCHS, paper_median
from dainv.report.stats import dai_loss_curves, metric_curve

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
    return f"seeds {', '.join(map(str, seeds))}{pooled}" if len(seeds) > 1 else f"seed {seeds[0]}" if seeds else "no seeds"


def new_figure(figsize: tuple[float, float]):
    matplotlib.use("Agg")
    return Figure(figsize=figsize, layout="constrained")


def render(fig) -> tuple[bytes, bytes]:
    png, svg = io.BytesIO(), io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, facecolor="white")
    fig.set_layout_engine("none")  # laid out by the first save; keeps the SVG identical
    fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    return png.getvalue(), svg.getvalue()


def plain_log_labels(ax, lo: float, hi: float) -> None:
    """Label a log y axis with plain numbers (0.3, 0.5, 1) instead of 3×10⁻¹."""
    decades = math.log10(hi / lo)
    keep = set(range(1, 10)) if decades < 0.7 else ({2, 3, 5} if decades < 2 else set())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _pos: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in keep else ""))


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure; ``caption``: text, or ``caption(repro, results)`` → text."""

    name: str
    title: str
    caption: str | Callable[[Reproduction, Mapping[str, Any]], str]
    draw: Callable[[Reproduction, Mapping[str, Any]], Any]
    missing: str


@dataclass
class FigureResult:
    """One figure: its files (PNG first, then SVG; empty when skipped) and, when skipped, why."""

    name: str
    title: str
    caption: str
    paths: list[Path] = field(default_factory=list)
    note: str | None = None


FIGURES: list[FigureSpec] = []
FIGURE_NAMES: list[str] = []


def register(name: str, title: str, caption: str | Callable[[Reproduction, Mapping[str, Any]], str], missing: str):
    """Decorator: add a draw function to :data:`FIGURES` (report order = registration order)."""

    def deco(draw):
        FIGURES.append(FigureSpec(name, title, caption, draw, missing))
        FIGURE_NAMES.append(name)
        return draw

    return deco


def make_figures(repro: Reproduction, out: Path, results: Mapping[str, Any]) -> list[FigureResult]:
    """Draw every registered figure into ``out``; one with no data carries a ``note`` instead."""
    made = []
    for spec in FIGURES:
        fig = spec.draw(repro, results)
        caption = spec.caption(repro, results) if callable(spec.caption) else spec.caption
        if fig is None:
            made.append(FigureResult(spec.name, spec.title, caption, [], f"Not drawn: {spec.missing}."))
            continue
        paths = [out / f"{spec.name}.png", out / f"{spec.name}.svg"]
        for path, data in zip(paths, render(fig)):
            runio.atomic_write(path, lambda f, data=data: f.write(data))
        made.append(FigureResult(spec.name, spec.title, caption, paths))
    return made


@register(
    "fig1_invariance", "Figure 1 — invariance score per layer",
    lambda repro, res: "Invariance score (Eq. 2, docs/method.md §2) of every test image under each heavier_eval "
    "transformation, per layer and arm (the paper's Figure 1)." + (" Diamonds: the paper's medians." if repro.paper else ""),
    "no arm has invariance scores (no `eval/scores.npz` or `eval/summary.json`)",
)
def fig_invariance(repro: Reproduction, res: Mapping[str, Any]):
    inv = res["invariance"]
    arms = [a for a in repro.arms if get(inv, a, "layers")]
    if not arms:
        return None
    layers = order_layers(la for a in arms for la in inv[a]["layers"])
    fig = new_figure((max(8.0, 0.95 * len(layers) + 2.5), 5.0))
    ax = fig.add_subplot()
    width, handles, paper_shown = 0.8 / len(arms), [], False
    for ia, arm in enumerate(arms):
        color, x0 = arm_color(repro.arms, arm), (ia - (len(arms) - 1) / 2) * width
        boxes = [(il, s) for il, la in enumerate(layers) if (s := inv[arm]["layers"].get(la)) is not None]
        ax.bxp([{"med": s["median"], **{k: s[k] for k in ("q1", "q3", "mean", "whislo", "whishi")}, "fliers": []}
                for _, s in boxes], positions=[il + x0 for il, _ in boxes], widths=width * 0.8, patch_artist=True,
               showfliers=False, manage_ticks=False,
               boxprops={"facecolor": color, "edgecolor": "#222222", "alpha": 0.85, "linewidth": 0.8},
               medianprops={"color": "black", "linewidth": 1.4},
               whiskerprops={"color": "#444444", "linewidth": 0.8}, capprops={"color": "#444444", "linewidth": 0.8})
        label = arm_label(repro, arm) + (" — quartiles from summary, no whiskers" if inv[arm]["source"] != "scores.npz" else "")
        label += " — NOT the final checkpoint" if inv[arm].get("stale") else ""
        handles.append(Patch(facecolor=color, edgecolor="#222222", label=label))
        pts = [(il + x0, pm) for il, la in enumerate(layers) if (pm := paper_median(arm, la)) is not None]
        if repro.paper and pts:  # All-CNN-C on CIFAR-10 only
            ax.scatter(*zip(*pts), marker="D", s=22, facecolor="white", edgecolor=color, linewidth=1.5, zorder=5)
            paper_shown = True
    if paper_shown:
        handles.append(Line2D([], [], marker="D", linestyle="none", markerfacecolor="white", markeredgecolor="#222222",
                              markersize=5, label="paper median (thesis fig., ±0.02), edge = arm colour"))
    ax.axhline(0, color="#888888", linewidth=0.8, linestyle=":", zorder=0)
    for il in range(len(layers) - 1):
        ax.axvline(il + 0.5, color="#eeeeee", linewidth=0.8, zorder=0)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set(xlabel="layer", ylabel="invariance score (Eq. 2)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False)
    seeds = sorted({s for a in arms for s in inv[a]["seeds"]}, key=str)
    ns = {s["n_scores"] for a in arms for s in inv[a]["layers"].values()}
    nbox = f"{ns.pop():,} scores per box" if len(ns) == 1 and None not in ns else "scores per box vary"
    ax.set_title(f"Invariance per layer — {repro.setting}, {seed_text(seeds, ' (pooled)')}; "
                 f"{nbox}; boxes: quartiles, whiskers: 1.5 IQR, no fliers", fontsize=10)
    return fig


#: Figure 2's rows: the metrics key of each denominator of Eq. 3 (the paper's text; the authors'
#: code, what the paper's Figure 2 plots) and its axis label.
DAI_DENOMINATORS = {"dai": "all pairs", "dai_same_class": "same-class pairs\n(the paper's Figure 2)"}


def _smoothed(y: Sequence[float], n: int) -> np.ndarray:
    """Running mean over ``n`` points (``n`` = 1: as is)."""
    y = np.asarray(y, dtype=float)
    if n <= 1 or len(y) < n:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = np.empty_like(y)
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    out[: n - 1] = c[1:n] / np.arange(1, n)
    return out


def _loss_source(repro: Reproduction, arm: str) -> str:
    """Where an arm's logged L_l comes from: with M = 1 (no pairs in training batches) fixed monitoring batches."""
    views = {get(r.config, "train", "views") for r in repro.results(arm)}
    return "monitoring batches" if views == {1} else "training batches"


def _dai_loss_caption(repro: Reproduction, res: Mapping[str, Any]) -> str:
    by: dict[str, list[str]] = {}
    for arm in repro.arms:
        by.setdefault(_loss_source(repro, arm), []).append(arm)
    where = {"monitoring batches": "on fixed monitoring batches (the same seeds × 8 views every epoch, no gradient, "
                                   "BatchNorm statistics frozen: M = 1 leaves no pairs in its training batches)",
             "training batches": "on its own training batches (mean over the epoch, before each step)"}
    said = "; ".join(f"{', '.join(arms)}: {where[k]}" for k, arms in by.items())
    mixed = (" The columns share the y axis but not the inputs: monitoring and training batches differ "
             "(`dai_monitor` in `metrics.jsonl` has every arm on the monitoring batches)." if len(by) > 1 else "")
    return ("Per-layer invariance loss L_l (Eq. 3, docs/method.md §2) per epoch, one column per arm, one row per "
            "denominator of Eq. 3: all pairs (the paper's text) and same-class pairs (the authors' released code, which "
            "logged what it trained with: the paper's Figure 2 plots this row). Every arm logs both, whatever it trains "
            f"with. Measured {said}.{mixed}")


@register("fig2_dai_loss", "Figure 2 — per-layer DAI loss over training", _dai_loss_caption,
          "no `dai` entries in any `metrics.jsonl`")
def fig_dai_loss(repro: Reproduction, res: Mapping[str, Any]):
    rows = {k: {a: c for a in repro.arms if (c := dai_loss_curves(repro, a, k))} for k in DAI_DENOMINATORS}
    rows = {k: v for k, v in rows.items() if v}
    if not rows:
        return None
    arms = list(dict.fromkeys(a for curves in rows.values() for a in curves))
    allv = [v for curves in rows.values() for c in curves.values() for d in c.values() for v in d["mean"]]
    use_log = min(allv) > 0 and max(allv) / min(allv) > 3
    fig = new_figure((4.2 * len(arms) + 1.6, 3.6 * len(rows) + 0.6))
    axes = fig.subplots(len(rows), len(arms), sharex=True, sharey=True, squeeze=False)
    all_layers = order_layers(la for curves in rows.values() for c in curves.values() for la in c)
    colors = {la: matplotlib.colormaps["viridis"](i / max(1, len(all_layers) - 1) * 0.92) for i, la in enumerate(all_layers)}
    handles = {}
    n_ep = max(len(d["epoch"]) for curves in rows.values() for c in curves.values() for d in c.values())
    window = max(1, n_ep // 100)  # thousands of short epochs: a running mean shows the trend
    for r, (key, curves) in enumerate(rows.items()):
        for ax, arm in zip(axes[r], arms):
            for layer, d in curves.get(arm, {}).items():
                (line,) = ax.plot(d["epoch"], _smoothed(d["mean"], window), color=colors[layer], linewidth=1.5,
                                  marker="o" if n_ep <= 25 else None, markersize=3, label=layer)  # fmt: skip
                handles.setdefault(layer, line)
            n_seeds = len(repro.results(arm))
            if r == 0:
                ax.set_title(arm_label(repro, arm) + (f" — mean of {n_seeds} seeds" if n_seeds > 1 else "")
                             + f"\nL_l on {_loss_source(repro, arm)}", fontsize=10)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both" if use_log else "major")
            if use_log:
                ax.set_yscale("log")
                plain_log_labels(ax, min(allv), max(allv))
        axes[r][0].set_ylabel(f"L_l, {DAI_DENOMINATORS[key]}" + (", log" if use_log else ""), fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.legend([handles[la] for la in all_layers], all_layers, loc="outside right center", fontsize=8, title="layer")
    seeds = sorted({r.seed for a in arms for r in repro.results(a)}, key=str)
    sources = {_loss_source(repro, a) for a in arms}
    fig.suptitle(f"Per-layer DAI loss over training — {repro.setting}, {seed_text(seeds)}"
                 + (f"; running mean over {window} epochs" if window > 1 else "")
                 + ("\nM = 1 arms: fixed monitoring batches; the others: their training batches (different inputs)"
                    if len(sources) > 1 else ""), fontsize=10)
    return fig


@register(
    "fig_per_transform", "Median invariance per transformation",
    "Median invariance score per layer and transformation (each of the heavier_eval "
    "transformations alone), shared colour scale.",
    "the evaluation summaries hold no `per_transform` medians",
)
def fig_per_transform(repro: Reproduction, res: Mapping[str, Any]):
    pt = res["per_transform"]
    arms = [a for a in repro.arms if a in pt]
    if not arms:
        return None
    transforms = list(dict.fromkeys(t for a in arms for t in pt[a]["values"]))
    layers = order_layers(la for a in arms for t in pt[a]["values"].values() for la in t)
    mats = {arm: np.array([[get(pt[arm]["values"], t, la) for la in layers] for t in transforms], dtype=float)
            for arm in arms}
    vals = np.concatenate([m[np.isfinite(m)] for m in mats.values()])
    vmin, vmax = float(vals.min()), float(vals.max())
    if vmin < 0 < vmax:
        cmap, norm = matplotlib.colormaps["RdBu"], TwoSlopeNorm(0.0, vmin, vmax)
    else:
        lo, hi = (vmin - 0.5, vmax + 0.5) if vmin == vmax else (vmin, vmax)
        cmap, norm = matplotlib.colormaps["viridis"], Normalize(lo, hi)
    fig = new_figure((0.75 * len(layers) + 2.8, (0.36 * len(transforms) + 0.9) * len(arms) + 0.6))
    axes = fig.subplots(len(arms), 1, squeeze=False)[:, 0]
    for ax, arm in zip(axes, arms):
        im = ax.imshow(np.ma.masked_invalid(mats[arm]), cmap=cmap, norm=norm, aspect="auto")
        for (i, j), v in np.ndenumerate(mats[arm]):
            if np.isfinite(v):
                r, g, b, _ = cmap(norm(v))
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, in_layout=False,
                        color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white")
        ax.set_yticks(range(len(transforms)), transforms, fontsize=8)
        ax.set_xticks(range(len(layers)), layers, fontsize=8)
        n = len(pt[arm]["seeds"])
        ax.set_title(arm_label(repro, arm) + (f" — mean of {n} seeds' medians" if n > 1 else ""), fontsize=9, loc="left")
        ax.tick_params(length=0)
    fig.colorbar(im, ax=list(axes), label="median invariance score (Eq. 2)", shrink=0.9)
    seeds = sorted({s for a in arms for s in pt[a]["seeds"]}, key=str)
    fig.suptitle(f"Median invariance per transformation — {repro.setting}, {seed_text(seeds)}",
                 fontsize=10)
    return fig


@register(
    "fig_accuracy", "Accuracy over training",
    lambda repro, res: "Test accuracy (single view, solid) and training accuracy on augmented views (dashed) per "
    "epoch" + ("; dotted: the paper's final test accuracy." if repro.paper else "."),
    "no accuracy logged in any `metrics.jsonl`",
)
def fig_accuracy(repro: Reproduction, res: Mapping[str, Any]):
    data = {a: (metric_curve(repro, a, "test_acc"), metric_curve(repro, a, "train_acc")) for a in repro.arms}
    data = {a: d for a, d in data.items() if d[0]["epoch"] or d[1]["epoch"]}
    if not data:
        return None
    fig = new_figure((8.5, 4.8))
    ax = fig.add_subplot()
    max_ep = max(max(t["epoch"] + tr["epoch"]) for t, tr in data.values())
    handles, band = [], False
    for arm, (test, train) in data.items():
        color, n = arm_color(repro.arms, arm), len(repro.results(arm))
        if test["epoch"]:
            mean, sd = 100 * np.asarray(test["mean"]), 100 * np.asarray(test["sd"])
            ax.plot(test["epoch"], mean, color=color, linewidth=1.8, marker="o" if max_ep <= 25 else None, markersize=3.5)
            if max(test["n"]) > 1:
                band = True
                ax.fill_between(test["epoch"], mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0)
        if train["epoch"]:
            ax.plot(train["epoch"], 100 * np.asarray(train["mean"]), color=color, linewidth=1.0, linestyle="--", alpha=0.8)
        handles.append(Line2D([], [], color=color, linewidth=2, label=arm_label(repro, arm) + (f", {n} seeds" if n > 1 else "")))
    handles += [Line2D([], [], color="#444444", linewidth=1.8, label="test, single view"),
                Line2D([], [], color="#444444", linewidth=1.0, linestyle="--", label="train (augmented views)")]
    published = [a for a in PAPER_ACCURACY if a in data] if repro.paper else []  # All-CNN-C on CIFAR-10 only
    for arm in published:
        ax.axhline(100 * PAPER_ACCURACY[arm], color=arm_color(repro.arms, arm), linestyle=":", linewidth=1.2)
    if published:
        handles.append(Line2D([], [], color="#444444", linestyle=":", linewidth=1.2,
                              label=f"paper (CCN), after {PAPER_EPOCHS} epochs"))
    if band:
        handles.append(Patch(facecolor="#999999", alpha=0.3, label="±1 sd over seeds"))
    ax.set(ylim=(0, 100), xlabel="epoch", ylabel="accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)
    seeds = sorted({r.seed for a in data for r in repro.results(a)}, key=str)
    ax.set_title(f"Accuracy over training — {repro.setting}, {seed_text(seeds)}"
                 + (" (mean over seeds)" if len(seeds) > 1 else ""), fontsize=10)
    return fig


@register(
    "fig_gap_epochs", "Invariance gap vs training length",
    "Difference of median invariance (Eq. 2) from the baseline per layer, at every evaluated "
    "checkpoint (`eval-epoch-NNNN/` and the final `eval/`); bars: 95 % paired bootstrap CI "
    "over test images. A bar that crosses 0 is no evidence of a difference at that epoch.",
    "no run has evaluations of kept checkpoints (`eval-epoch-NNNN/`; the `cpu-long` preset keeps and evaluates them)",
)
def fig_gap_epochs(repro: Reproduction, res: Mapping[str, Any]):
    pairs = (res.get("gap_vs_epochs") or {}).get("pairs")
    if not pairs:
        return None
    layers = order_layers(la for d in pairs.values() for la in d)
    ncol = min(5, len(layers))
    nrow = math.ceil(len(layers) / ncol)
    fig = new_figure((2.6 * ncol + 0.5, 2.3 * nrow + 0.9))
    axes = fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, layer in zip(axes, layers):
        for name, by_layer in pairs.items():
            if pts := by_layer.get(layer):
                err = np.array([[p["diff"] - p["lo"] for p in pts], [p["hi"] - p["diff"] for p in pts]])
                ax.errorbar(np.array([p["epoch"] for p in pts]), np.array([p["diff"] for p in pts]), yerr=err, marker="o",
                            color=arm_color(repro.arms, name.split(" − ")[0]), markersize=3, capsize=2, linewidth=1.2, label=name)
        ax.axhline(0, color="#888888", linewidth=0.8, linestyle=":")
        ax.set_title(layer, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, ax in enumerate(axes):
        ax.set_visible(i < len(layers))
        if i >= len(layers) - ncol:
            ax.set_xlabel("epoch", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.supylabel("difference of median invariance", fontsize=9)
    fig.suptitle(f"Invariance gap vs training length — {repro.setting} "
                 "(95 % paired bootstrap CI)", fontsize=10)
    return fig
