"""The report as data: :func:`collect_results` (every number, ``results.json``) and
:func:`build_document` (the blocks of ``report.md``/``report.html``, headline first)."""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import dainv.report.stats as stats
from dainv.report.blocks import (
    Block,
    Bullets,
    FigureBlock,
    Heading,
    Para,
    Quote,
    inline,
    md,
    strong,
    table,
)
from dainv.report.figures import FigureResult
from dainv.report.load import Reproduction, finite, get, settings_check, under_scheme
from dainv.report.paper import (
    PAPER_ACCURACY,
    PAPER_ACCURACY_THESIS,
    PAPER_EPOCHS,
    PAPER_HARDWARE,
    PAPER_MEDIAN_LAYERS,
    PAPER_MEDIANS,
    PAPER_OVERHEAD,
    THESIS_OTHER_NETWORKS,
)
from dainv.report.prose import findings, headline, missing_sentences, run_gaps, seed_spread_rows
from dainv.report.style import seed_text
from dainv.report.tables import (
    accuracy_table,
    config_table,
    fmt_duration,
    gap_table,
    median_table,
    overhead_table,
    runs_table,
)

__all__ = ["collect_results", "build_document", "jsonable", "protocol_line"]


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x) if isinstance(x, Path) else x


def _run_rows(repro: Reproduction) -> dict[str, dict[Any, dict[str, Any]]]:
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    for arm in repro.arms:
        out[arm] = {}
        for seed, r in repro.runs[arm].items():
            e: dict[str, Any] = {"folder": repro.folders[arm][seed], "exists": r is not None,
                                 "missing": run_gaps(repro, arm, seed)}
            if r is not None:
                e.update(status=r.status, epochs_done=r.epochs_done, epochs_planned=r.epochs_planned,
                         evaluated_checkpoint=_portable(r.final_eval.checkpoint if r.final_eval else None),
                         stale_evaluation=r.stale_reason,
                         **{k: r.meta.get(k) for k in ("wall_time_s", "train_time_s", "started", "finished",
                                                       "device", "torch", "git_commit", "cpu")})
            out[arm][seed] = e
    return out


def _portable(ck: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A checkpoint record with its path as the run folder names it (``checkpoints/final.pt``),
    not as the machine that evaluated it did: a committed report shows no machine's paths."""
    if not isinstance(ck, Mapping):
        return None
    out = dict(ck)
    if isinstance(out.get("path"), str) and Path(out["path"]).is_absolute():
        p = Path(out["path"])
        out["path"] = f"{p.parent.name}/{p.name}" if p.parent.name == "checkpoints" else p.name
    return out


def _first(repro: Reproduction, *keys: str) -> list[str]:
    return list(dict.fromkeys(str(v) for r in repro.all_results() if (v := get(r.config, *keys)) is not None))


def protocol_line(repro: Reproduction) -> str:
    """Protocol (``method.protocol``), precision, device and CPU of the runs (Markdown)."""
    protocol = _first(repro, "method", "protocol")
    precision = _first(repro, "train", "precision") or ["not recorded"]
    devices = list(dict.fromkeys(str(r.meta["device"]) for r in repro.all_results() if r.meta.get("device")))
    cpus = list(dict.fromkeys(str(c) for r in repro.all_results() if (c := r.meta.get("cpu"))))
    cpus = cpus or ([str(repro.machine["cpu"])] if repro.machine.get("cpu") else [])
    if protocol:
        proto = (f"Protocol `{'`, `'.join(protocol)}` (`method.protocol`: the paper's text or the authors' "
                 "code, docs/method.md)")
    else:
        proto = "Protocol not recorded (runs made before `method.protocol` existed follow the paper's text)"
    return (f"{proto}; precision {', '.join(precision)}; device {', '.join(devices) or 'not recorded'}; "
            f"CPU {', '.join(cpus) or 'not recorded'}.")


def collect_results(repro: Reproduction) -> dict[str, Any]:
    """Every number of the report's tables, as written to ``results.json``."""
    acc = stats.accuracy_stats(repro)
    inv = stats.invariance_stats(repro)
    cis = stats.comparisons(repro)
    paper = repro.paper  # the published numbers only for All-CNN-C on CIFAR-10
    return {
        "headline": headline(repro, acc, cis, inv),
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reproduction": repro.path.name,
        "preset": repro.preset,
        "preset_note": repro.preset_note,
        "overrides": _overrides(repro),
        "protocol": protocol_line(repro),
        "arms": repro.arms,
        "seeds": repro.seeds,
        "machine": repro.machine,
        "runs": _run_rows(repro),
        "accuracy": acc,
        "paper_setting": paper,
        "paper_accuracy": {"ccn": PAPER_ACCURACY, "thesis": PAPER_ACCURACY_THESIS, "thesis_other": THESIS_OTHER_NETWORKS} if paper else None,
        "invariance": inv,
        "differences": {"ci_level": stats.CI_LEVEL, "n_boot": stats.N_BOOT, "vs_baseline": cis,
                        "not_compared": stats.unpaired(repro)},
        "settings": settings_check(repro),
        "gap_vs_epochs": stats.gap_vs_epochs(repro),
        "other_schemes": _other_schemes(repro),
        "paper_medians": {arm: dict(zip(PAPER_MEDIAN_LAYERS, vals)) for arm, vals in PAPER_MEDIANS.items()} if paper else None,
        "per_transform": stats.per_transform_stats(repro),
        "training_time": stats.overhead_stats(repro),
        "missing": missing_sentences(repro),
        "findings": findings(repro, acc, inv, cis),
    }


def _other_schemes(repro: Reproduction) -> dict[str, Any]:
    """Per other evaluation scheme (``eval+SCHEME/``): medians, differences and the gap vs epochs."""
    out = {}
    for scheme in sorted({s for r in repro.all_results() for s in r.scheme_evals}):
        view = under_scheme(repro, scheme)
        out[scheme] = {"invariance": stats.invariance_stats(view), "vs_baseline": stats.comparisons(view),
                       "gap_vs_epochs": stats.gap_vs_epochs(view)}
    return out


def _schemes_section(repro: Reproduction, res: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = []
    for scheme, r in (res.get("other_schemes") or {}).items():
        out.append(Heading(2, inline(f"Under the evaluation scheme `{scheme}`")))
        h, rows = median_table(repro, r["invariance"], r["vs_baseline"])
        out.append(table(h, rows, md(f"Median invariance (Eq. 2) of the final checkpoints under `{scheme}` "
                                     "(`eval+SCHEME/`) instead of each run's own scheme; differences from the "
                                     "baseline with their 95 % paired bootstrap CI.")))
        if r["gap_vs_epochs"]:
            h, rows = gap_table(r["gap_vs_epochs"])
            out.append(table(h, rows, md(f"Difference from the baseline at each evaluated checkpoint under `{scheme}`.")))
    return out


def _fig(figs: Sequence[FigureResult], name: str, level: int = 3) -> list[Block]:
    f = next((f for f in figs if f.name == name), None)
    if f is None:
        return []
    if f.png is None:
        return [Heading(level, inline(f.title)), Para(inline(f.note or "Not drawn."))]
    return [Heading(level, inline(f.title)), FigureBlock(f.title, md(f.caption), f.png)]


def _title(repro: Reproduction, res: Mapping[str, Any]) -> list[Block]:
    kind = "comparison of runs" if repro.adhoc else "reproduction report"
    what = f"preset `{repro.preset}`" if repro.preset else repro.setting
    paper = ("numbers marked “paper” are the published ones (CCN 2019 paper and thesis)" if repro.paper else
             "the published numbers are not shown: they are of All-CNN-C trained on CIFAR-10, and these runs are "
             f"not (they are {repro.trained})")  # fmt: skip
    out: list[Block] = [
        Heading(1, md(f"Data augmentation invariance — {kind} ({what})")),
        Para(inline(strong("Result:"), " ", res["headline"])),
        # the folder's name, not its path: a committed report shows no machine's paths
        Para(md(f"Generated {res['generated']} from the folder `{repro.path.name}`. Every number below comes from the run files; "
                f"{paper}, the method is described "
                "in docs/method.md. Machine-readable: `results.json`; `figures/` holds each figure as PNG and SVG. "
                "The run folders are not part of a committed copy of this report.")),
        Para(md(res["protocol"])),
    ]
    if repro.preset_note:
        out.append(Quote(md(repro.preset_note)))
    mixed = _settings_words(res["settings"])
    if res.get("overrides"):
        changed = ", ".join(f"`{o}`" for o in res["overrides"])
        tail = ("Where the description above says otherwise, these settings are what ran." if not mixed else
                "**Not every arm ran with them** (they are the last `dainv reproduce` command's; see the warning "
                "below); each arm's own settings are in the "
                "configuration table of the Setup section.")  # fmt: skip
        out.append(Quote(md(f"**Changed from the preset** (`--set`): {changed}. {tail}")))
    if mixed:
        out.append(Quote(md("**Warning — the arms were trained with different settings** that no declared "
                            f"variant explains, so their differences are not the arm's effect alone: {mixed}.")))
    stale = [f"{a} seed {s}: {why}" for a, by in res["runs"].items() for s, e in by.items() if (why := e.get("stale_evaluation"))]
    if stale:
        out.append(Quote(md("**Warning — stale evaluations, NOT the final checkpoints:** " + " ".join(stale))))
    refused = [f"{name}: {why}." for name, why in res["differences"].get("not_compared", {}).items()]
    if refused:
        out.append(Quote(md("**Warning — arms evaluated on different images are not compared:** " + " ".join(refused))))
    return out


def _settings_words(check: Mapping[str, Any]) -> str:
    """``train.lr`` baseline 0.05, dai 0.01; … for the settings no declared variant explains."""
    parts = []
    for key in check.get("undeclared", []):
        by = check["differ"][key]
        parts.append(f"`{key}` " + ", ".join(f"{a} {' / '.join(str(v) for v in vals)}" for a, vals in by.items()))
    return "; ".join(parts)


def _headline(repro: Reproduction, res: Mapping[str, Any], figs: Sequence[FigureResult]) -> list[Block]:
    inv, cis = res["invariance"], res["differences"]["vs_baseline"]
    srcs = []
    for arm in repro.arms:
        if arm in inv:
            src = "`eval/scores.npz`" if inv[arm]["source"] == "scores.npz" else "`eval/summary.json` (no scores file)"
            srcs.append(f"{arm}: {src}, {seed_text(inv[arm]['seeds'], ' pooled')}")
        else:
            srcs.append(f"{arm}: no invariance scores")
    caption = ("Median invariance score (Eq. 2, docs/method.md §2). " + "; ".join(srcs) + ". Differences from the "
               f"baseline: [95 % CI] of a paired bootstrap over test images ({stats.N_BOOT} resamples, the same images "
               "for every arm); \"includes 0\": no evidence of a difference."
               + (" Paper: read off the thesis figure (±0.02), no value for conv9." if repro.paper else ""))
    out: list[Block] = [Heading(2, inline("Median invariance per layer")), table(*median_table(repro, inv, cis), md(caption))]
    spread = seed_spread_rows(inv)
    if spread:
        out.append(table(*spread, "Spread over seeds: mean ± sd of the per-seed medians."))
    out += _fig(figs, "fig1_invariance")
    h, r = accuracy_table(repro, res["accuracy"])
    out += [Heading(2, inline("Test accuracy")),
            table(h, r, "Test set. With several seeds: mean ± sd over seeds. Light TTA: mean softmax over 10 light "
                        "views (docs/method.md §6)."
                        + (f" Paper: {PAPER_EPOCHS} epochs, All-CNN-C, CIFAR-10." if repro.paper else "")),
            Heading(2, inline("What this shows")), Bullets([md(f) for f in res["findings"]])]
    return out


def _gap_section(res: Mapping[str, Any], figs: Sequence[FigureResult]) -> list[Block]:
    gap = res.get("gap_vs_epochs")
    if not gap:
        return []
    h, r = gap_table(gap)
    return [Heading(2, inline("Invariance gap vs training length")),
            table(h, r, md("Difference of median invariance from the baseline at each evaluated checkpoint "
                           "(`eval-epoch-NNNN/`, and `eval/` for the final one) [95 % paired bootstrap CI].")),
            *_fig(figs, "fig_gap_epochs")]


def _missing_section(res: Mapping[str, Any]) -> list[Block]:
    out: list[Block] = [Heading(2, inline("Missing or unfinished"))]
    if res["missing"]:
        out += [Bullets([md(s) for s in res["missing"].values()]),
                Para(inline("Statistics use only what exists; missing parts show as —."))]
    else:
        out.append(Para(inline("Nothing missing: every run finished all planned epochs and was evaluated.")))
    return out


def _overhead_section(repro: Reproduction, res: Mapping[str, Any]) -> list[Block]:
    tt = res["training_time"]
    out: list[Block] = [Heading(2, inline("Training-time overhead of DAI")),
                        table(*overhead_table(repro, tt), md(
                            "Median `epoch_time_s` over the logged epochs of all seeds, each run's first epoch left "
                            "out (start-up) when it logged more than one; samples/s = samples per epoch / that "
                            "median; overhead = median / baseline median − 1. Machine load: the 1-minute load "
                            "average (`load_avg`) per epoch against the cores (`cpu_count`)."))]
    o = tt["overhead_vs_baseline"].get("dai")
    devices = ", ".join(sorted({str(r.meta["device"]) for r in repro.all_results() if r.meta.get("device")}))
    ref = ("The reference figure for the overhead is the paired step benchmark, `make bench` "
           "(benchmarks/, docs/performance.md): it times both steps back to back on the same machine.")
    if o is None:
        lacking = " and ".join(a for a in ("baseline", "dai") if a not in tt["arms"])
        out.append(Para(md(f"DAI's overhead cannot be computed: epoch times are missing for {lacking}. {ref}")))
        return out
    value = f"{o['percent']:+.1f} %"
    if o.get("concurrent"):
        text = (f"DAI's training-time overhead from these runs, {value}, is **unreliable**: arms were trained "
                "side by side on one device (`dainv reproduce --parallel`), so each epoch time includes the "
                "other arms' work for as long as they ran.")
    elif o["overloaded"]:
        text = (f"DAI's training-time overhead from these runs, {value}, is **unreliable**: the machine's load "
                "exceeded its cores during the runs, so other work slowed the arms unevenly.")
    else:
        text = f"DAI's training-time overhead: **{value}** per epoch vs the baseline"
        text += "." if o["load_recorded"] else " (load not recorded: other work on the machine may have slowed either arm)."
    text += f" Measured on {devices or 'an unrecorded device'}"
    text += f" (paper: about +{100 * PAPER_OVERHEAD:.0f} % on {PAPER_HARDWARE})." if repro.paper else "."
    out.append(Para(md(f"{text} {ref}")))
    return out


def _overrides(repro: Reproduction) -> list[str]:
    """The reproduction's ``--set`` settings (``reproduce.json``), machine-specific ones left out."""
    skip = ("data.root=", "device=")
    return [str(o) for o in repro.manifest.get("overrides") or [] if not str(o).startswith(skip)]


def _setup_section(repro: Reproduction, res: Mapping[str, Any]) -> list[Block]:
    m = repro.machine
    items = [(f"preset: `{repro.preset}`" if repro.preset else f"no preset: run folders of {repro.trained}")
             + f"; arms: {', '.join(repro.arms)}; "
             f"seeds: {', '.join(str(s) for s in repro.seeds) or '—'}"]
    if res.get("overrides"):
        items.append("changed from the preset (`--set`): " + ", ".join(f"`{o}`" for o in res["overrides"]))
    shown = ("platform", "cpu", "device", "torch", "python", "dainv")
    items += [f"{k}: {m[k]}" for k in shown if m.get(k) is not None]
    items.append(f"git commit: `{m['git_commit']}`" if m.get("git_commit") else "git commit: not recorded")
    items += [f"{k}: {v}" for k, v in m.items() if k not in (*shown, "git_commit")]
    out: list[Block] = [Heading(2, inline("Setup")), Bullets([md(i) for i in items]),
                        table(*runs_table(repro, res["runs"]), md("Runs: status, epochs logged / planned, wall time (`meta.json`)."))]
    walls = []
    for arm in repro.arms:
        w = [e["wall_time_s"] for e in res["runs"][arm].values() if finite(e.get("wall_time_s"))]
        if w:
            walls.append(f"{arm} {fmt_duration(sum(w))} ({len(w)} run{'s' if len(w) > 1 else ''})")
    if walls:
        out.append(Para(inline("Wall time per arm (sum over seeds): " + "; ".join(walls) + ".")))
    if cfg := config_table(repro, list(res["settings"]["differ"])):
        out.append(table(*cfg, md("Configuration per arm (`config.yaml`).")))
    return out


def build_document(repro: Reproduction, res: Mapping[str, Any], figs: Sequence[FigureResult]) -> list[Block]:
    """The report, headline first: medians with CIs, accuracy, Figure 1, findings; then the gap
    vs training length, what is missing, the overhead, the setup and the other figures."""
    shown = {"fig1_invariance", "fig_gap_epochs"}
    rest = [b for f in figs if f.name not in shown for b in _fig(figs, f.name)]
    return [*_title(repro, res), *_headline(repro, res, figs), *_gap_section(res, figs), *_schemes_section(repro, res),
            *_missing_section(res),
            *_overhead_section(repro, res), *_setup_section(repro, res), Heading(2, inline("Figures")), *rest]
