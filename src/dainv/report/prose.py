"""The report's sentences: what is missing, what the numbers show — every number from the files.

Sentences are :data:`~dainv.report.blocks.Inline` text (rendered to Markdown and HTML alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import dainv.report.stats as stats
from dainv.report.blocks import Inline, code, inline, strong
from dainv.report.load import Reproduction, get, order_layers
from dainv.report.paper import (
    LONG_PRESETS,
    PAPER_ACCURACY,
    PAPER_EPOCHS,
    PAPER_MEDIAN_LAYERS,
    paper_median,
)
from dainv.report.stats import dai_loss_curves

__all__ = ["finding_layers", "run_gaps", "missing_sentences", "findings", "fmt_ci", "pct", "headline"]


def pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def fmt_ci(ci: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``+0.086 [+0.071, +0.102]``, with ``, includes 0`` when the interval does."""
    if not ci:
        return "—"
    s = f"{ci['diff']:+.{digits}f} [{ci['lo']:+.{digits}f}, {ci['hi']:+.{digits}f}]"
    return s + (", includes 0" if ci["includes_zero"] else "")


def finding_layers(layers: Sequence[str]) -> list[str]:
    """The layers the automatic findings compare: the deeper half of the network's layers
    (pixel space ``input`` aside), e.g. conv5–conv9 of All-CNN-C's conv1–conv9."""
    body = [la for la in layers if la != "input"]
    return body[len(body) - math.ceil(len(body) / 2):]


def run_gaps(repro: Reproduction, arm: str, seed: Any) -> list[str]:
    """What is missing or unfinished in one run, as short phrases."""
    run = repro.runs[arm][seed]
    folder = repro.folders.get(arm, {}).get(seed, "?")
    if run is None:
        return [f"run folder `{folder}` does not exist (not started)"]
    gaps: list[str] = []
    if not run.meta:
        gaps.append("no `meta.json`")
    elif not run.finished:
        gaps.append(f"not finished (`meta.json` status '{run.status}': still running or interrupted)")
    planned = run.epochs_planned
    if not run.metrics:
        gaps.append("no epoch logged in `metrics.jsonl`")
    elif planned is not None and run.epochs_done < planned:
        gaps.append(f"{run.epochs_done} of {planned} epochs logged")
    if run.summary is None:
        gaps.append("not evaluated (no `eval/summary.json`: no final accuracy or invariance numbers)")
    elif run.scores is None:
        gaps.append("no `eval/scores.npz` (invariance from the summary's quartiles only)")
    if run.stale_reason:
        gaps.append("STALE EVALUATION: " + run.stale_reason)
    return gaps + _kept_gaps(run) + run.problems


def _kept_gaps(run: Any) -> list[str]:
    """The kept checkpoints (``train.keep_epochs``) of trained epochs that have no evaluation;
    those whose checkpoint was lost (``meta.json``'s ``kept_epochs_lost``) say so."""
    kept = get(run.config, "train", "keep_epochs")
    lost = set(run.meta.get("kept_epochs_lost") or [])
    out = []
    for e in sorted(kept) if isinstance(kept, list) else ():
        if isinstance(e, int) and e <= run.epochs_done and e not in run.epoch_evals:
            why = ("its checkpoint was lost when the run was stopped (`meta.json`: kept_epochs_lost)" if e in lost
                   else "no `eval-epoch-NNNN/`")  # fmt: skip
            out.append(f"the kept checkpoint of epoch {e} (`train.keep_epochs`) is not evaluated: {why}; "
                       "the gap vs epochs lacks it")  # fmt: skip
    return out


def missing_sentences(repro: Reproduction) -> dict[str, str]:
    """One sentence (Markdown) per arm that has something missing or unfinished."""
    out: dict[str, str] = {}
    for arm in repro.arms:
        parts = [f"seed {seed}: " + "; ".join(gaps) + "."
                 for seed in repro.runs[arm] if (gaps := run_gaps(repro, arm, seed))]
        if parts:
            out[arm] = f"**{arm}** — " + " ".join(parts)
    return out


def _ci_words(ci: Mapping[str, Any] | None) -> str:
    if not ci:
        return ""
    if ci["includes_zero"]:
        return (f"; 95 % CI {ci['lo']:+.3f} to {ci['hi']:+.3f} includes 0: no evidence of a "
                "difference at this layer")
    return f"; 95 % CI {ci['lo']:+.3f} to {ci['hi']:+.3f}"


def _dai_vs_baseline(inv: Mapping[str, Any], cis: Mapping[str, Any], layers: Sequence[str], paper: bool) -> Inline:
    parts, above, clear = [], 0, 0
    for layer in layers:
        d, b = inv["dai"]["layers"][layer]["median"], inv["baseline"]["layers"][layer]["median"]
        ci = get(cis, "dai − baseline", layer)
        above += d > b
        clear += bool(ci) and not ci["includes_zero"]
        word = "above" if d > b else ("equal to" if d == b else "below")
        pd, pb = (paper_median("dai", layer), paper_median("baseline", layer)) if paper else (None, None)
        published = f" (paper {pd:.2f} vs {pb:.2f})" if pd is not None and pb is not None else ""
        parts.append(inline(code(layer), f" DAI {d:.3f} vs baseline {b:.3f}: {word} by {abs(d - b):.3f}{published}",
                            _ci_words(ci)))
    joined = [x for i, p in enumerate(parts) for x in ((("; ",) if i else ()) + p)]
    return inline(
        f"Median invariance (Eq. 2) at {layers[0]}–{layers[-1]}: DAI's median is above the baseline's at "
        f"{above} of {len(layers)} layers, with a 95 % paired bootstrap CI of the difference that excludes 0 "
        f"at {clear} of them — ", joined, ".")


def _invariance_findings(repro: Reproduction, inv: Mapping[str, Any], cis: Mapping[str, Any]) -> list[Inline]:
    if "dai" not in inv or "baseline" not in inv:
        lacking = [inline(code(a), "" if a in repro.arms else " (not an arm of this report)")
                   for a in ("baseline", "dai") if a not in inv]
        joined = [x for i, p in enumerate(lacking) for x in ((" and ",) if i else ()) + p]
        return [inline("DAI's invariance cannot be compared with the baseline's: no invariance scores for ",
                       joined, ".")]
    both = [la for la in inv["dai"]["layers"] if la in inv["baseline"]["layers"]]
    layers = finding_layers(order_layers(both, list(inv["dai"]["layers"])))
    if not layers:
        return [inline("No layer has invariance scores for both DAI and baseline.")]
    out = [_dai_vs_baseline(inv, cis, layers, repro.paper)]
    if "control" in inv:
        shown = [la for la in layers if la in inv["control"]["layers"]]
        items = []
        for la in shown:
            d, c = inv["dai"]["layers"][la]["median"], inv["control"]["layers"][la]["median"]
            items += [*(("; ",) if items else ()), code(la), f" {d:.3f} vs {c:.3f} ({d - c:+.3f})"]
        if items:
            out.append(inline("DAI vs the control (same M views per seed image, α = 0 — separates the effect of "
                              "the loss from that of the in-batch views), median invariance: ", items, "."))
    return out


def _loss_trend(repro: Reproduction) -> Inline | None:
    trends = []
    for arm in repro.arms:
        curves = dai_loss_curves(repro, arm)
        if not curves:
            continue
        eps = sorted(set.intersection(*(set(c["epoch"]) for c in curves.values())))
        if len(eps) < 2:
            continue
        first = np.mean([c["mean"][c["epoch"].index(eps[0])] for c in curves.values()])
        last = np.mean([c["mean"][c["epoch"].index(eps[-1])] for c in curves.values()])
        trend = "rising" if last > first else "falling" if last < first else "flat"
        trends.append(f"{arm} {first:.3f} (epoch {eps[0]}) → {last:.3f} (epoch {eps[-1]}), {trend}")
    if not trends:
        return None
    paper = (" In the paper (Figure 2) the baseline's rises while the DAI model's falls after a few epochs."
             if repro.paper else "")
    return inline("DAI loss L_l (Eq. 3), mean over layers: " + "; ".join(trends) + "." + paper)


def findings(
    repro: Reproduction,
    acc: Mapping[str, Any] | None = None,
    inv: Mapping[str, Any] | None = None,
    cis: Mapping[str, Any] | None = None,
) -> list[str]:
    """The automatic "what this shows" sentences (Markdown), every number from the files."""
    from dainv.report.render import inline_md

    return [inline_md(f) for f in finding_texts(repro, acc, inv, cis)]


def finding_texts(
    repro: Reproduction,
    acc: Mapping[str, Any] | None = None,
    inv: Mapping[str, Any] | None = None,
    cis: Mapping[str, Any] | None = None,
) -> list[Inline]:
    """The sentences of :func:`findings` as inline text."""
    acc = stats.accuracy_stats(repro) if acc is None else acc
    inv = stats.invariance_stats(repro) if inv is None else inv
    cis = stats.comparisons(repro) if cis is None else cis
    out = _invariance_findings(repro, inv, cis)
    d, b = get(acc, "dai", "single_view", "mean"), get(acc, "baseline", "single_view", "mean")
    if d is not None and b is not None:
        paper = 100 * (PAPER_ACCURACY["dai"] - PAPER_ACCURACY["baseline"])
        published = f"; the CCN paper: {paper:+.1f} points after {PAPER_EPOCHS} epochs" if repro.paper else ""
        out.append(inline(f"Single-view test accuracy: DAI {pct(d)} vs baseline {pct(b)} ({100 * (d - b):+.2f} "
                          f"points{published})."))
    if (trend := _loss_trend(repro)) is not None:
        out.append(trend)
    stale = [f"{a} seed {s}" for a in inv for s in inv[a].get("stale", {})]
    if stale:
        out.append(inline(strong("Stale evaluations:"), f" {', '.join(stale)} — the invariance and accuracy "
                          "numbers of these runs are not those of their final checkpoints (see below)."))
    if repro.preset and repro.preset != "paper" and not repro.adhoc and repro.paper:
        vals = [paper_median("dai", la) for la in PAPER_MEDIAN_LAYERS[4:9]]
        out.append(inline(
            strong(f"This is the \"{repro.preset}\" preset, not \"paper\"."),
            f" The size of the paper's effect (DAI medians ≈{min(vals):.2f}–{max(vals):.2f} at "
            f"{PAPER_MEDIAN_LAYERS[4]}–{PAPER_MEDIAN_LAYERS[8]}, after {PAPER_EPOCHS} epochs) needs the longer presets (",
            code(LONG_PRESETS[0]), ", ", code(LONG_PRESETS[1]),
            "); the numbers here show the direction of the effect at best, not its size."))
    return out


#: How the headline names the arms of :data:`dainv.config.ARMS` (other arms by their names).
_ARM_WORDS = {"dai": "DAI", "baseline": "the baseline", "control": "the control"}


def _layer_list(layers: Sequence[str]) -> str:
    return ", ".join(layers)


def _comparison_clause(name: str, by_layer: Mapping[str, Any], layers: Sequence[str]) -> str:
    """One comparison (``ARM − REF``) at ``layers`` in words, honest about CIs that include 0
    and about differences of both signs."""
    arm, ref = (_ARM_WORDS.get(x, x) for x in name.split(" − ", 1))
    cis = [by_layer[la] for la in layers]
    span = f"{layers[0]}–{layers[-1]}" if len(layers) > 1 else layers[0]
    d = [c["diff"] for c in cis]
    rng = f"{min(d):+.3f}" if len(d) == 1 else f"{min(d):+.3f} to {max(d):+.3f}"
    env = f"[{min(c['lo'] for c in cis):+.3f}, {max(c['hi'] for c in cis):+.3f}]"
    up = [la for la, c in zip(layers, cis) if c["lo"] > 0]
    down = [la for la, c in zip(layers, cis) if c["hi"] < 0]
    none = [la for la, c in zip(layers, cis) if c["includes_zero"]]
    if len(up) == len(layers):
        return f"{arm} is more invariant than {ref} at {span}, by {rng} (95 % CIs within {env}, none includes 0)"
    if len(down) == len(layers):
        return f"{arm} is less invariant than {ref} at {span}, by {rng} (95 % CIs within {env}, none includes 0)"
    if len(none) == len(layers):
        return f"{arm} vs {ref} at {span}: no evidence of a difference ({rng}; every 95 % CI includes 0)"
    parts = [f"{w} at {_layer_list(ls)}" for w, ls in (("above 0", up), ("below 0", down), ("includes 0", none)) if ls]
    both = ", in both directions" if up and down else ""
    return f"{arm} vs {ref} at {span}: {rng}{both} (95 % CI {'; '.join(parts)})"


def headline(repro: Reproduction, acc: Mapping[str, Any], cis: Mapping[str, Any], inv: Mapping[str, Any]) -> str:
    """The report's one-line result (plain text, no markup: also printed by ``dainv reproduce``):
    every comparison with its reference over the deeper layers (:func:`finding_layers`), then
    each arm's single-view test accuracy — every number from the results."""
    clauses = []
    for name, by_layer in cis.items():
        layers = finding_layers([la for la, ci in by_layer.items() if ci])
        if layers:
            clauses.append(_comparison_clause(name, by_layer, layers))
    if not clauses:
        clauses.append("no arm's invariance can be compared with a baseline's (see below)")
    text = "; ".join(clauses)
    accs = [f"{_ARM_WORDS.get(a, a).removeprefix('the ')} {100 * v:.1f} %" for a in repro.arms
            if (v := get(acc, a, "single_view", "mean")) is not None]  # fmt: skip
    text += "; test accuracy " + (", ".join(accs) if accs else "not measured") + "."
    stale = [a for a in inv if inv[a].get("stale")]
    if stale:
        text += f" Stale evaluations (not the final checkpoints): {', '.join(stale)}."
    return text[:1].upper() + text[1:]


def seed_spread_rows(inv: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of the per-seed spread table (arms with ≥ 2 seeds), or None."""
    arms = [a for a in inv if any(s["seed_spread"]["n"] > 1 for s in inv[a]["layers"].values())]
    if not arms:
        return None
    layers = order_layers(la for a in arms for la in inv[a]["layers"])
    rows = []
    for la in layers:
        row = [la]
        for a in arms:
            sp = get(inv, a, "layers", la, "seed_spread")
            row.append("—" if not sp or sp["n"] < 2 else f"{sp['mean']:.3f} ± {sp['sd']:.3f} (n={sp['n']})")
        rows.append(row)
    return ["layer", *arms], rows
