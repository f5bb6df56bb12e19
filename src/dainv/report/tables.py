"""The report's tables, as (headers, rows) of text cells; every number from the results dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dainv.report.load import Reproduction, finite, get, order_layers
from dainv.report.paper import (
    PAPER_ACCURACY,
    PAPER_ACCURACY_THESIS,
    PAPER_MEDIANS,
    PAPER_OVERHEAD,
    paper_median,
)
from dainv.report.prose import fmt_ci, pct

__all__ = ["accuracy_table", "median_table", "overhead_table", "runs_table", "config_table", "gap_table",
           "fmt_duration", "ACC_LABELS"]

ACC_LABELS = {"single_view": "single view", "light_tta10": "light TTA (10 views)"}
_ACC_KEYS = ("single_view", "light_tta10")


def fmt_duration(s: Any) -> str:
    if not finite(s):
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _paper_pct(x: float | None) -> str:
    return "—" if x is None else f"{round(100 * x, 2):g} %"


def _fmt_acc(entry: Mapping[str, Any] | None) -> str:
    if not entry or not entry.get("n"):
        return "—"
    if entry["n"] > 1:
        return f"{100 * entry['mean']:.2f} ± {100 * entry['sd']:.2f} % (n={entry['n']})"
    return pct(entry["mean"])


def accuracy_table(repro: Reproduction, acc: Mapping[str, Any]):
    keys = [k for k in dict.fromkeys([*_ACC_KEYS, *(k for a in acc.values() for k in a)]) if k != "last_epoch_test_acc"]
    paper = ["paper (CCN)", "paper (thesis)"] if repro.paper else []  # All-CNN-C on CIFAR-10 only
    headers = ["arm", *(ACC_LABELS.get(k, k) for k in keys), "last logged epoch (metrics)", *paper]
    rows = []
    for arm in repro.arms:
        a = acc.get(arm, {})
        last = a.get("last_epoch_test_acc", {})
        last_txt = _fmt_acc(last)
        if last.get("n"):
            last_txt += f" at epoch {', '.join(str(e) for e in sorted(set(last['epoch'].values())))}"
        published = [_paper_pct(PAPER_ACCURACY.get(arm)), _paper_pct(PAPER_ACCURACY_THESIS.get(arm))] if paper else []
        rows.append([arm, *(_fmt_acc(a.get(k)) for k in keys), last_txt, *published])
    return headers, rows


def _arm_header(arm: str, inv: Mapping[str, Any]) -> str:
    return f"{arm} (NOT final)" if get(inv, arm, "stale") else arm


def median_table(repro: Reproduction, inv: Mapping[str, Any], cis: Mapping[str, Any]):
    """Per layer: each arm's median (beside the paper's, for All-CNN-C on CIFAR-10), then each
    arm's difference from the baseline with its 95 % paired bootstrap CI."""
    arms = [a for a in repro.arms if a in inv]
    layers = order_layers(la for a in arms for la in inv[a]["layers"])
    published = PAPER_MEDIANS if repro.paper else {}
    headers = ["layer"]
    for arm in arms:
        headers += [_arm_header(arm, inv)] + ([f"paper {arm}"] if arm in published else [])
    headers += [f"paper {arm}" for arm in published if arm not in arms]
    headers += [f"{name} (95 % CI)" for name in cis]
    rows = []
    for la in layers:
        row = [la]
        for arm in arms:
            m = get(inv, arm, "layers", la, "median")
            row.append("—" if m is None else f"{m:.3f}")
            if arm in published:
                row.append("—" if (pm := paper_median(arm, la)) is None else f"{pm:.2f}")
        row += ["—" if (pm := paper_median(arm, la)) is None else f"{pm:.2f}" for arm in published if arm not in arms]
        row += [fmt_ci(by_layer.get(la)) for by_layer in cis.values()]
        rows.append(row)
    return headers, rows


def _load_text(load: Mapping[str, Any]) -> str:
    if not load["recorded"]:
        return "load not recorded"
    word = "OVERLOADED" if load["overloaded"] else "ok"
    return f"{word}: max load {load['max_load_avg']:.1f} on {load['cpu_count']} cores"


def overhead_table(repro: Reproduction, tt: Mapping[str, Any]):
    headers = ["arm", "epochs timed", "median epoch time", "samples / s", "overhead vs baseline",
               *(["paper"] if repro.paper else []), "machine load"]
    rows = []
    for arm in repro.arms:
        s = tt["arms"].get(arm)
        if s is None:
            rows.append([arm, "0", *["—"] * (len(headers) - 2)])
            continue
        o = tt["overhead_vs_baseline"].get(arm)
        over = "reference" if arm == "baseline" else ("—" if o is None else f"{o['percent']:+.1f} %")
        if o is not None and not o["reliable"]:
            over += " (trained side by side)" if o.get("concurrent") else (
                " (unreliable)" if o["overloaded"] else " (load not recorded)")
        rate = "—" if s["samples_per_s"] is None else f"{s['samples_per_s']:.0f}"
        paper = [f"≈ +{100 * PAPER_OVERHEAD:.0f} %" if arm == "dai" else "—"] if repro.paper else []
        rows.append([arm, str(s["n_epochs"]), f"{s['median_epoch_time_s']:.2f} s", rate, over, *paper, _load_text(s["load"])])
    return headers, rows


def runs_table(repro: Reproduction, runs: Mapping[str, Any]):
    headers = ["arm", "seed", "folder", "status", "epochs", "wall time", "train time", "device", "torch", "git commit"]
    rows = []
    for arm in repro.arms:
        for seed, e in runs[arm].items():
            if not e["exists"]:
                rows.append([arm, str(seed), f"`{e['folder']}`", "missing", *["—"] * 6])
                continue
            planned = e["epochs_planned"]
            rows.append([arm, str(seed), f"`{e['folder']}`", str(e["status"]),
                         f"{e['epochs_done']}" + (f" / {planned}" if planned is not None else ""),
                         fmt_duration(e["wall_time_s"]), fmt_duration(e["train_time_s"]),
                         str(e["device"] or "—"), str(e["torch"] or "—"),
                         f"`{str(e['git_commit'])[:12]}`" if e["git_commit"] else "—"])
    return headers, rows


_CONFIG_KEYS = {
    ("method", "protocol"): "protocol",
    ("train", "epochs"): "epochs",
    ("train", "views"): "views M",
    ("train", "batch_size"): "batch size",
    ("train", "alpha"): "α",
    ("train", "precision"): "precision",
    ("model", "name"): "model",
    ("model", "width"): "width",
}


def config_table(repro: Reproduction, more: list[str] = ()):
    """Each arm's settings (``config.yaml``): the usual keys, and ``more`` (``section.key``: the
    settings in which the runs differ)."""
    labels = {**_CONFIG_KEYS, **{tuple(k.split(".")): k for k in more if tuple(k.split(".")) not in _CONFIG_KEYS}}
    present = [k for k in labels if any(get(r.config, *k) is not None for r in repro.all_results())]
    if not present:
        return None
    rows = []
    for arm in repro.arms:
        row = [arm]
        for k in present:
            vals = list(dict.fromkeys(str(get(r.config, *k)) for r in repro.results(arm) if get(r.config, *k) is not None))
            row.append(", ".join(vals) if vals else "—")
        rows.append(row)
    return ["arm", *(labels[k] for k in present)], rows


def gap_table(gap: Mapping[str, Any]):
    """Rows layer × epoch columns of the differences from the baseline with their CIs."""
    pairs = gap.get("pairs") or {}
    epochs = gap.get("epochs") or []
    headers = ["comparison", "layer", *(f"epoch {e}" for e in epochs)]
    rows = []
    for name, by_layer in pairs.items():
        for layer, pts in by_layer.items():
            at = {p["epoch"]: p for p in pts}
            rows.append([name, layer, *(fmt_ci(at.get(e)) for e in epochs)])
    return headers, rows
