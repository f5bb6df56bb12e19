"""The report's statistics, as plain dicts (``results.json``). Every arm is scored on the same images under the
same draws, so a comparison resamples image indices jointly (paired bootstrap)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dainv.augment import TRANSFORMS
from dainv.measure import summarise
from dainv.report.load import (
    EvalResult,
    Reproduction,
    RunResult,
    finite,
    get,
    infer_arm,
    order_layers,
)
from dainv.report.paper import PAPER_OVERHEAD

#: Bootstrap resamples and the confidence level of every CI in the report.
N_BOOT = 1000
CI_LEVEL = 0.95
#: The arm every other one is compared with (unless :func:`references` picks a matching one).
REFERENCE = "baseline"
_CHUNK = 50


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    return {"n": len(vals), "mean": float(np.mean(vals)) if vals else None,
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}


def box_stats(x: np.ndarray) -> dict[str, float]:
    """Median, quartiles, mean and 1.5-IQR whisker ends of finite scores, by the one home
    :func:`dainv.measure.summarise` (what ``ax.bxp`` draws)."""
    s = summarise({"x": x})
    return {k: s[k]["x"] for k in ("median", "q1", "q3", "mean", "whislo", "whishi")}


def accuracy_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: each accuracy of ``eval/summary.json`` as ``{"n", "mean", "sd", "values": {seed: acc}}``,
    and ``last_epoch_test_acc``: the last ``test_acc`` in ``metrics.jsonl``, with its epoch."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        keys = dict.fromkeys(["single_view", "light_tta10", *(k for r in runs for k in get(r.summary, "accuracy") or {})])
        out[arm] = {}
        for k in keys:
            vals = {r.seed: float(v) for r in runs if finite(v := get(r.summary, "accuracy", k))}
            out[arm][k] = {**mean_sd(list(vals.values())), "values": vals}
        logged = {r.seed: ms[-1] for r in runs if (ms := [m for m in r.metrics if finite(m.get("test_acc"))])}
        last = {s: float(m["test_acc"]) for s, m in logged.items()}
        out[arm]["last_epoch_test_acc"] = {**mean_sd(list(last.values())), "values": last,
                                           "epoch": {s: int(m["epoch"]) for s, m in logged.items()}}
    return out


def _pooled(evals: Sequence[EvalResult], layer: str) -> np.ndarray | None:
    """``layer``'s scores over several evaluations: ``(n_images, S·T)`` if they share the images, else ``(1, N)``."""
    parts = [np.asarray(e.scores[layer], dtype=np.float64) for e in evals if e.scores and layer in e.scores]
    parts = [p.reshape(p.shape[0], -1) if p.ndim >= 2 else p.reshape(-1, 1) for p in parts]
    if not parts:
        return None
    if len({p.shape[0] for p in parts}) == 1:
        return np.concatenate(parts, axis=1)
    return np.concatenate([p.ravel() for p in parts])[None, :]


def _layer_stats(runs: Sequence[RunResult], layer: str) -> dict[str, Any] | None:
    x = _pooled([r.final_eval for r in runs], layer)
    flat = x.ravel() if x is not None else np.empty(0)
    ok = np.isfinite(flat)
    if not ok.any():
        return None
    per_seed = {r.seed: float(np.median(v[np.isfinite(v)])) for r in runs
                if np.isfinite(v := np.asarray(r.scores.get(layer, []), dtype=np.float64).ravel()).any()}
    return {**box_stats(flat[ok]), "n_scores": int(ok.sum()), "n_nonfinite": int((~ok).sum()),
            "per_seed_median": per_seed, "seed_spread": mean_sd(list(per_seed.values()))}


def _summary_layer_stats(runs: Sequence[RunResult], layer: str) -> dict[str, Any] | None:
    vals = {q: [float(v) for r in runs if finite(v := get(r.summary, "invariance", q, layer))]
            for q in ("median", "q1", "q3", "mean")}
    if not vals["median"]:
        return None
    s = {q: float(np.mean(v)) for q, v in vals.items() if v}
    s.setdefault("q1", s["median"])
    s.setdefault("q3", s["median"])
    s["whislo"], s["whishi"] = s["q1"], s["q3"]
    per_seed = {r.seed: float(v) for r in runs if finite(v := get(r.summary, "invariance", "median", layer))}
    n_img, n_tr = (get(runs[0].summary, "invariance", k) for k in ("n_images", "n_transforms"))
    n = n_img * n_tr * len(runs) if finite(n_img) and finite(n_tr) else None
    return {**s, "n_scores": n, "n_nonfinite": None, "per_seed_median": per_seed,
            "seed_spread": mean_sd(list(per_seed.values()))}


def _arm_layers(runs: Sequence[RunResult]) -> list[str]:
    return list(dict.fromkeys(la for r in runs if r.final_eval for la in r.final_eval.layers))


def invariance_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: ``{"source", "seeds", "stale", "layers": {layer: box stats, per-seed medians}}``; from ``scores.npz``
    (seeds pooled, non-finite ones counted), else ``summary.json`` (quartiles' mean over seeds, no whiskers)."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        if used := [r for r in runs if r.scores]:
            lstats = {la: s for la in _arm_layers(used) if (s := _layer_stats(used, la))}
            src = "scores.npz"
        elif used := [r for r in runs if isinstance(get(r.summary, "invariance", "median"), dict)]:
            layers = order_layers([*_arm_layers(used), *(k for r in used for k in r.summary["invariance"]["median"])])
            lstats = {la: s for la in layers if (s := _summary_layer_stats(used, la))}
            src = "summary.json"
        else:
            continue
        out[arm] = {"source": src, "seeds": [r.seed for r in used],
                    "stale": {r.seed: r.stale_reason for r in used if r.stale_reason}, "layers": lstats}
    return out


def per_transform_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: ``{"seeds", "values": {transform: {layer: mean over seeds of the medians}}}``."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = [r for r in repro.results(arm) if isinstance(get(r.summary, "per_transform"), dict)]
        acc: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            for t, by_layer in r.summary["per_transform"].items():
                for layer, v in (by_layer.items() if isinstance(by_layer, dict) else ()):
                    if finite(v):
                        acc.setdefault(t, {}).setdefault(layer, []).append(float(v))
        if acc:
            names = [t for t in TRANSFORMS if t in acc] + [t for t in acc if t not in TRANSFORMS]
            out[arm] = {"seeds": [r.seed for r in runs], "values": {
                t: {la: float(np.mean(acc[t][la])) for la in order_layers(acc[t], _arm_layers(runs))} for t in names}}
    return out


def bootstrap_medians(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Medians of ``n_boot`` resamples of the rows (test images) of ``x``, non-finite scores left out.
    The same number of rows and ``seed`` draw the same indices: the paired bootstrap."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n = flat.shape[0]
    med = np.nanmedian if not np.isfinite(flat).all() else np.median
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        out[start : start + b] = med(flat[rng.integers(0, n, size=(b, n))].reshape(b, -1), axis=1)
    return out


def median_diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL,
                   boot_b: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """``median(a) − median(b)`` and its percentile bootstrap CI, paired when they have the same rows.
    ``boot_b``: ``b``'s bootstrap medians computed earlier (a baseline shared by comparisons)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    paired = a.shape[0] == b.shape[0]
    diff = float(np.nanmedian(a) - np.nanmedian(b))
    ba = bootstrap_medians(a, n_boot, seed)
    bb = boot_b if boot_b is not None and paired else bootstrap_medians(b, n_boot, seed if paired else seed + 1)
    lo, hi = (float(v) for v in np.percentile(ba - bb, [50 * (1 - level), 50 * (1 + level)]))
    return {"diff": diff, "lo": lo, "hi": hi, "includes_zero": bool(lo <= 0.0 <= hi),
            "paired": paired, "n_boot": n_boot, "level": level}


def references(repro: Reproduction, ref: str = REFERENCE) -> dict[str, str]:
    """Each arm's reference: ``ref``, or for an arm with another interpolation (which warps its
    evaluation differently) a baseline-like arm with the arm's one, if any (``baseline-nearest``)."""
    first = {a: rs[0].config for a in repro.arms if (rs := repro.results(a))}
    interp = {a: get(first.get(a), "augment", "interpolation") for a in [*repro.arms, ref]}
    like = [b for b in repro.arms if b in first and infer_arm(first[b], b) == ref]
    out = {}
    for arm in repro.arms:
        same = [b for b in like if b != arm and interp[b] == interp[arm]]
        out[arm] = ref if interp[arm] == interp[ref] or not same else same[0]
    return out


def _eval_key(e: EvalResult) -> tuple[tuple[Any, ...], str]:
    """What makes two evaluations pairable (the same images under the same draws), and its words."""
    p, n = get(e.summary, "protocol") or {}, get(e.summary, "invariance", "n_images")
    images = p.get("test_digest") or (p.get("data"), n)
    words = f"{n} test images" + (f" of {p['data']}" if p.get("data") else "") + f", scheme {p.get('scheme')} seed {p.get('seed')}"
    return (str(images), p.get("scheme"), p.get("seed"), p.get("transforms_per_image")), words


def unpaired(repro: Reproduction, ref: str = REFERENCE, pick=lambda r: r.final_eval) -> dict[str, str]:
    """``"ARM − REF"`` → why no paired CI exists: not evaluated on the same images and draws."""
    keys = {arm: dict(_eval_key(e) for r in repro.results(arm) if (e := pick(r)) is not None and e.scores)
            for arm in repro.arms}
    out = {}
    for arm, r in references(repro, ref).items():
        if arm != r and keys.get(arm) and keys.get(r) and len(keys[arm] | keys[r]) > 1:
            out[f"{arm} − {r}"] = (f"not compared: evaluated on different test images or transformation draws "
                                   f"({arm}: {'; '.join(sorted(set(keys[arm].values())))} — {r}: "
                                   f"{'; '.join(sorted(set(keys[r].values())))}); re-evaluate them with the runs' "
                                   "own protocol (`dainv reproduce` does)")  # fmt: skip
    return out


def comparisons(repro: Reproduction, ref: str = REFERENCE, seed: int = 0, pick=lambda r: r.final_eval) -> dict[str, Any]:
    """``{"ARM − REF": {layer: ci}}``: each arm's median invariance minus its reference's, with a
    paired bootstrap CI (seeds pooled), except :func:`unpaired`'s; ``pick``: which evaluation."""
    scores: dict[str, dict[str, np.ndarray]] = {}
    for arm in repro.arms:
        evals = [e for r in repro.results(arm) if (e := pick(r)) is not None and e.scores]
        for la in dict.fromkeys(la for e in evals for la in e.layers):
            if (x := _pooled(evals, la)) is not None:
                scores.setdefault(arm, {})[la] = x
    refs, out = references(repro, ref), {}
    refused = {name.split(" − ")[0] for name in unpaired(repro, ref, pick)}
    for r in dict.fromkeys(refs.values()):
        group = {a: s for a, s in scores.items() if a != r and refs.get(a) == r and a not in refused}
        for layer, base in scores.get(r, {}).items():
            boot_ref = bootstrap_medians(base, N_BOOT, seed)
            for arm, by_layer in group.items():
                if layer in by_layer:
                    ci = median_diff_ci(by_layer[layer], base, seed=seed, boot_b=boot_ref)
                    out.setdefault(f"{arm} − {r}", {})[layer] = ci
    return out


def _final_epoch(run: RunResult) -> int | None:
    return None if run.final_eval is None or run.stale_reason else run.final_eval.epoch or run.epochs_planned


def gap_vs_epochs(repro: Reproduction, ref: str = REFERENCE, seed: int = 0) -> dict[str, Any]:
    """:func:`comparisons` at every evaluated epoch (and the final one when not stale):
    ``{"epochs", "pairs": {"ARM − REF": {layer: [{"epoch", **ci}]}}, "not_compared"}``."""
    runs = repro.all_results()
    if not any(r.epoch_evals for r in runs):
        return {}
    epochs = sorted({e for r in runs for e in r.epoch_evals} | {e for r in runs if (e := _final_epoch(r)) is not None})
    pairs: dict[str, dict[str, list]] = {}
    refused: dict[int, dict[str, str]] = {}
    for ep in epochs:
        def pick(r: RunResult, ep: int = ep) -> EvalResult | None:
            return r.epoch_evals.get(ep) or (r.final_eval if _final_epoch(r) == ep else None)

        for name, by_layer in comparisons(repro, ref, seed, pick).items():
            for layer, ci in by_layer.items():
                pairs.setdefault(name, {}).setdefault(layer, []).append({"epoch": ep, **ci})
        if why := unpaired(repro, ref, pick):
            refused[ep] = why
    used = sorted({p["epoch"] for d in pairs.values() for pts in d.values() for p in pts})
    return {"epochs": used, "pairs": pairs, "not_compared": refused} if pairs or refused else {}


def _runs_of(epochs: Iterable[int]) -> list[list[int]]:
    """Sorted epochs as ``[first, last]`` runs of consecutive ones."""
    out: list[list[int]] = []
    for e in sorted(epochs):
        if out and e == out[-1][1] + 1:
            out[-1][1] = e
        else:
            out.append([e, e])
    return out


def _arm_times(runs: Sequence[RunResult]) -> dict[str, Any] | None:
    rows, used = [], {}
    for r in runs:
        timed = [m for m in r.metrics if finite(m.get("epoch_time_s"))]
        timed = timed[1:] if len(timed) > 1 else timed  # the first epoch carries start-up costs
        rows += timed
        if timed:
            used[r.seed] = _runs_of(int(m["epoch"]) for m in timed)
    if not rows:
        return None
    times = np.array([float(m["epoch_time_s"]) for m in rows])
    per_epoch = [float(m["samples_per_s"]) * float(m["epoch_time_s"]) for m in rows if finite(m.get("samples_per_s"))]
    median = float(np.median(times))
    samples = float(np.median(per_epoch)) if per_epoch else None
    loads = [float(m["load_avg"]) for m in rows if finite(m.get("load_avg"))]
    cpus = [int(m["cpu_count"]) for m in rows if finite(m.get("cpu_count"))]
    load = ({"recorded": True, "max_load_avg": max(loads), "cpu_count": min(cpus), "overloaded": max(loads) > min(cpus)}
            if loads and cpus else {"recorded": False, "max_load_avg": None, "cpu_count": None, "overloaded": None})
    return {"median_epoch_time_s": median, "mean_epoch_time_s": float(np.mean(times)), "n_epochs": int(times.size),
            "epochs_used": used, "samples_per_epoch": samples,
            "samples_per_s": samples / median if samples and median > 0 else None, "load": load}


def overhead_stats(repro: Reproduction, ref: str = REFERENCE) -> dict[str, Any]:
    """Per arm the median epoch time (first epochs left out), samples/s and load; per other arm the overhead
    ``median / ref's median − 1``, ``reliable`` only if both loads are known, within the cores, not ``--parallel``."""
    arms = {arm: s for arm in repro.arms if (s := _arm_times(repro.results(arm)))}
    together = set(repro.manifest.get("trained_concurrently") or [])
    base = arms.get(ref)
    overhead: dict[str, Any] = {}
    for arm, s in arms.items():
        if arm == ref or base is None or base["median_epoch_time_s"] <= 0:
            continue
        frac = s["median_epoch_time_s"] / base["median_epoch_time_s"] - 1.0
        loads = (s["load"], base["load"])
        concurrent = any(r.path.name in together for r in (*repro.results(arm), *repro.results(ref)))
        overhead[arm] = {"fraction": frac, "percent": 100.0 * frac, "load_recorded": all(x["recorded"] for x in loads),
                         "overloaded": any(x["overloaded"] for x in loads), "concurrent": concurrent,
                         "reliable": all(x["recorded"] and not x["overloaded"] for x in loads) and not concurrent}
    return {"arms": arms, "overhead_vs_baseline": overhead, "paper_percent": 100 * PAPER_OVERHEAD,
            "reference": "make bench (the paired step benchmark, benchmarks/)"}


def _by_epoch(pairs: Iterable[tuple[Any, Any]]) -> dict[str, list]:
    """``(epoch, value)`` pairs as the per-epoch mean, sd (0 for one value) and count."""
    by: dict[int, list[float]] = {}
    for e, v in pairs:
        by.setdefault(int(e), []).append(float(v))
    eps = sorted(by)
    return {"epoch": eps, "mean": [float(np.mean(by[e])) for e in eps],
            "sd": [float(np.std(by[e], ddof=1)) if len(by[e]) > 1 else 0.0 for e in eps], "n": [len(by[e]) for e in eps]}


def metric_curve(repro: Reproduction, arm: str, key: str) -> dict[str, list]:
    """A ``metrics.jsonl`` key per epoch, over the arm's seeds."""
    return _by_epoch((m["epoch"], m[key]) for r in repro.results(arm) for m in r.metrics if finite(m.get(key)))


def dai_loss_curves(repro: Reproduction, arm: str, key: str = "dai") -> dict[str, dict[str, list]]:
    """Per layer, L_l (Eq. 3) per epoch over the arm's seeds; ``key``: ``dai`` or ``dai_same_class``."""
    rows = [(la, m["epoch"], v) for r in repro.results(arm) for m in r.metrics
            if isinstance(m.get(key), dict) for la, v in m[key].items() if finite(v)]  # fmt: skip
    layers = order_layers((la for la, _, _ in rows), _arm_layers(repro.results(arm)))
    return {la: _by_epoch((e, v) for name, e, v in rows if name == la) for la in layers}
