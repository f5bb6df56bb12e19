"""The report's statistics: accuracies, box statistics, paired bootstrap CIs, overhead, curves.

Every function reads a :class:`~dainv.report.load.Reproduction` and returns plain dicts (written
to ``results.json`` as they are). Invariance scores (Eq. 2, ``docs/method.md`` §2) of one
evaluation have shape ``(n_images, n_transforms)``; every arm is scored on the same test images
under the same transformation draws, so a comparison of arms resamples image indices jointly
(a *paired* bootstrap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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

__all__ = [
    "N_BOOT",
    "CI_LEVEL",
    "mean_sd",
    "box_stats",
    "accuracy_stats",
    "invariance_stats",
    "per_transform_stats",
    "bootstrap_medians",
    "median_diff_ci",
    "comparisons",
    "unpaired",
    "gap_vs_epochs",
    "overhead_stats",
    "dai_loss_curves",
    "metric_curve",
]

#: Bootstrap resamples and the confidence level of every CI in the report.
N_BOOT = 1000
CI_LEVEL = 0.95
#: The arm every other one is compared with (unless :func:`references` picks a matching one).
REFERENCE = "baseline"
_ACC_KEYS = ("single_view", "light_tta10")
_CHUNK = 50


def mean_sd(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    n = len(vals)
    return {
        "n": n,
        "mean": float(np.mean(vals)) if n else None,
        "sd": float(np.std(vals, ddof=1)) if n > 1 else None,
    }


def box_stats(x: np.ndarray) -> dict[str, float]:
    """Median, quartiles, mean and 1.5-IQR whisker ends of finite scores: the statistics an
    evaluation's ``summary.json`` holds (:func:`dainv.measure.summarise`, one home), the same
    numbers ``ax.bxp`` draws from :func:`matplotlib.cbook.boxplot_stats`."""
    s = summarise({"x": x})
    return {k: s[k]["x"] for k in ("median", "q1", "q3", "mean", "whislo", "whishi")}


def accuracy_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: each accuracy of ``eval/summary.json`` (single view, light TTA, …) as
    ``{"n", "mean", "sd", "values": {seed: acc}}``, and the last logged ``test_acc`` of
    ``metrics.jsonl`` (with its epoch) as ``last_epoch_test_acc``."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        keys = list(dict.fromkeys([*_ACC_KEYS, *(k for r in runs for k in get(r.summary, "accuracy") or {})]))
        arm_out: dict[str, Any] = {}
        for k in keys:
            vals = {r.seed: float(v) for r in runs if finite(v := get(r.summary, "accuracy", k))}
            arm_out[k] = {**mean_sd(list(vals.values())), "values": vals}
        last, last_epoch = {}, {}
        for r in runs:
            logged = [m for m in r.metrics if finite(m.get("test_acc"))]
            if logged:
                last[r.seed] = float(logged[-1]["test_acc"])
                last_epoch[r.seed] = int(logged[-1]["epoch"])
        arm_out["last_epoch_test_acc"] = {**mean_sd(list(last.values())), "values": last, "epoch": last_epoch}
        out[arm] = arm_out
    return out


def _pooled(evals: Sequence[EvalResult], layer: str) -> np.ndarray | None:
    """The scores of ``layer`` over several evaluations (seeds), as ``(n_images, S·T)`` when
    they share the test images (paired), else flattened to ``(1, N)``."""
    parts = [np.asarray(e.scores[layer], dtype=np.float64) for e in evals if e.scores and layer in e.scores]
    parts = [p.reshape(p.shape[0], -1) if p.ndim >= 2 else p.reshape(-1, 1) for p in parts]
    if not parts:
        return None
    if len({p.shape[0] for p in parts}) == 1:
        return np.concatenate(parts, axis=1)
    return np.concatenate([p.ravel() for p in parts])[None, :]


def _layer_stats(evals: Sequence[EvalResult], seeds: Sequence[Any], layer: str) -> dict[str, Any] | None:
    x = _pooled(evals, layer)
    if x is None:
        return None
    flat = x.ravel()
    ok = np.isfinite(flat)
    if not ok.any():
        return None
    per_seed = {}
    for seed, e in zip(seeds, evals):
        if e.scores and layer in e.scores:
            v = np.asarray(e.scores[layer], dtype=np.float64).ravel()
            if np.isfinite(v).any():
                per_seed[seed] = float(np.median(v[np.isfinite(v)]))
    spread = mean_sd(list(per_seed.values()))
    return {**box_stats(flat[ok]), "n_scores": int(ok.sum()), "n_nonfinite": int((~ok).sum()),
            "per_seed_median": per_seed, "seed_spread": spread}


def _summary_layer_stats(runs: Sequence[RunResult], layer: str) -> dict[str, Any] | None:
    vals: dict[str, list[float]] = {}
    per_seed = {}
    for r in runs:
        for q in ("median", "q1", "q3", "mean"):
            v = get(r.summary, "invariance", q, layer)
            if finite(v):
                vals.setdefault(q, []).append(float(v))
                if q == "median":
                    per_seed[r.seed] = float(v)
    if "median" not in vals:
        return None
    s = {q: float(np.mean(v)) for q, v in vals.items()}
    s.setdefault("q1", s["median"])
    s.setdefault("q3", s["median"])
    s["whislo"], s["whishi"] = s["q1"], s["q3"]
    n_img = get(runs[0].summary, "invariance", "n_images")
    n_tr = get(runs[0].summary, "invariance", "n_transforms")
    n = n_img * n_tr * len(runs) if finite(n_img) and finite(n_tr) else None
    return {**s, "n_scores": n, "n_nonfinite": None, "per_seed_median": per_seed,
            "seed_spread": mean_sd(list(per_seed.values()))}


def _arm_layers(runs: Sequence[RunResult]) -> list[str]:
    listed = [la for r in runs if r.final_eval for la in r.final_eval.layers]
    return order_layers(listed, listed)


def invariance_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: ``{"source", "seeds", "stale", "layers": {layer: stats}}``; stats hold median,
    q1, q3, mean, whiskers (1.5 IQR), the number of scores, the per-seed medians and their
    spread (mean ± sd). Layer names and order come from the evaluations.

    Source ``"scores.npz"``: from the scores of every seed, pooled (non-finite scores dropped and
    counted). Source ``"summary.json"``: no scores file, the summaries' quartiles (mean over seeds),
    no whiskers. Arms with neither are left out. ``stale`` lists the seeds whose ``eval/`` did not
    score the run's final checkpoint."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        with_scores = [r for r in runs if r.scores]
        if with_scores:
            seeds = [r.seed for r in with_scores]
            evals = [r.final_eval for r in with_scores]
            lstats = {la: s for la in _arm_layers(with_scores) if (s := _layer_stats(evals, seeds, la))}
            src, used = "scores.npz", with_scores
        else:
            used = [r for r in runs if isinstance(get(r.summary, "invariance", "median"), dict)]
            if not used:
                continue
            layers = order_layers([*_arm_layers(used), *(k for r in used for k in r.summary["invariance"]["median"])])
            lstats = {la: s for la in layers if (s := _summary_layer_stats(used, la))}
            src = "summary.json"
        stale = {r.seed: r.stale_reason for r in used if r.stale_reason}
        out[arm] = {"source": src, "seeds": [r.seed for r in used], "stale": stale, "layers": lstats}
    return out


def per_transform_stats(repro: Reproduction, transforms: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per arm with ``per_transform`` in its summaries: ``{"seeds", "values": {transform:
    {layer: median}}}`` — the mean over seeds of the per-seed medians. Transformations in the
    order of :data:`dainv.augment.TRANSFORMS`."""
    if transforms is None:
        from dainv.augment import TRANSFORMS as transforms
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = [r for r in repro.results(arm) if isinstance(get(r.summary, "per_transform"), dict)]
        acc: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            for t, by_layer in r.summary["per_transform"].items():
                for layer, v in (by_layer.items() if isinstance(by_layer, dict) else ()):
                    if finite(v):
                        acc.setdefault(t, {}).setdefault(layer, []).append(float(v))
        if not acc:
            continue
        ref = _arm_layers(runs)
        names = [t for t in transforms if t in acc] + [t for t in acc if t not in transforms]
        out[arm] = {
            "seeds": [r.seed for r in runs],
            "values": {t: {la: float(np.mean(acc[t][la])) for la in order_layers(acc[t], ref)} for t in names},
        }
    return out


# ------------------------------------------------------------------------------------------
# Paired bootstrap of the difference of medians
# ------------------------------------------------------------------------------------------


def bootstrap_medians(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Medians of ``n_boot`` resamples of the rows (test images) of ``x`` (``(n_images, …)``).

    Resample ``b`` takes the row indices ``default_rng(seed).integers(0, n, (n_boot, n))[b]``
    (drawn in chunks, the same stream): two arrays with the same number of rows and the same
    ``seed`` are resampled on the same images — the paired bootstrap. Non-finite scores are
    left out of each median."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    med = np.nanmedian if not np.isfinite(flat).all() else np.median
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start : start + b] = med(flat[idx].reshape(b, -1), axis=1)
    return out


def median_diff_ci(
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = CI_LEVEL,
    boot_b: np.ndarray | None = None,
) -> dict[str, Any]:
    """Difference of medians ``median(a) − median(b)`` and its percentile bootstrap CI.

    Paired (the same image indices for both) when ``a`` and ``b`` have the same number of rows;
    otherwise each is resampled on its own images (``paired`` False). ``boot_b``: the bootstrap
    medians of ``b`` computed earlier with the same ``n_boot``/``seed`` (a baseline shared by
    several comparisons)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    paired = a.shape[0] == b.shape[0]
    diff = float(np.nanmedian(a) - np.nanmedian(b))
    ba = bootstrap_medians(a, n_boot, seed)
    bb = boot_b if boot_b is not None and paired else bootstrap_medians(b, n_boot, seed if paired else seed + 1)
    lo, hi = (float(v) for v in np.percentile(ba - bb, [50 * (1 - level), 50 * (1 + level)]))
    return {"diff": diff, "lo": lo, "hi": hi, "includes_zero": bool(lo <= 0.0 <= hi),
            "paired": paired, "n_boot": n_boot, "level": level}


def _compare(scores: Mapping[str, Mapping[str, np.ndarray]], ref: str, seed: int) -> dict[str, Any]:
    """``{"ARM − REF": {layer: ci}}`` for every arm other than ``ref`` with scores at a layer."""
    out: dict[str, Any] = {}
    for layer, base in scores.get(ref, {}).items():
        boot_ref = bootstrap_medians(base, N_BOOT, seed)
        for arm, by_layer in scores.items():
            if arm != ref and layer in by_layer:
                ci = median_diff_ci(by_layer[layer], base, seed=seed, boot_b=boot_ref)
                out.setdefault(f"{arm} − {ref}", {})[layer] = ci
    return out


def references(repro: Reproduction, ref: str = REFERENCE) -> dict[str, str]:
    """Each arm's reference: ``ref``, unless the arm resamples with another interpolation than
    ``ref`` does (its evaluation then warps differently): then a baseline-like arm (M = 1, α = 0)
    that uses the arm's interpolation, if the reproduction has one (e.g. ``baseline-nearest``)."""
    def interp(arm: str) -> Any:
        runs = repro.results(arm)
        return get(runs[0].config, "augment", "interpolation") if runs else None

    def baseline_like(arm: str) -> bool:
        runs = repro.results(arm)
        return bool(runs) and infer_arm(runs[0].config, arm) == "baseline"

    out = {}
    for arm in repro.arms:
        same = [b for b in repro.arms if b != arm and baseline_like(b) and interp(b) == interp(arm)]
        out[arm] = ref if interp(arm) == interp(ref) or not same else same[0]
    return out


def _eval_key(e: EvalResult) -> tuple[Any, ...]:
    """What makes two evaluations pairable: the same test images (``test_digest``; else the data
    set and the number of images) under the same transformation draws (scheme, seed, T)."""
    p = get(e.summary, "protocol") or {}
    images = p.get("test_digest") or (p.get("data"), get(e.summary, "invariance", "n_images"))
    return (str(images), p.get("scheme"), p.get("seed"), p.get("transforms_per_image"))


def _eval_words(e: EvalResult) -> str:
    p = get(e.summary, "protocol") or {}
    n = get(e.summary, "invariance", "n_images")
    return (f"{n} test images" + (f" of {p['data']}" if p.get("data") else "")
            + f", scheme {p.get('scheme')} seed {p.get('seed')}")  # fmt: skip


def unpaired(repro: Reproduction, ref: str = REFERENCE, pick=lambda r: r.final_eval) -> dict[str, str]:
    """The comparisons that are refused, ``"ARM − REF"`` → why: the two arms' evaluations (all
    seeds) were not made on the same test images under the same transformation draws, so no
    paired CI of their difference exists (e.g. one arm re-evaluated with ``--n-test 4``)."""
    keys: dict[str, dict[tuple, str]] = {}
    for arm in repro.arms:
        for r in repro.results(arm):
            if (e := pick(r)) is not None and e.scores:
                keys.setdefault(arm, {})[_eval_key(e)] = _eval_words(e)
    out = {}
    for arm, r in references(repro, ref).items():
        if arm != r and arm in keys and r in keys and len(keys[arm] | keys[r]) > 1:
            out[f"{arm} − {r}"] = (f"not compared: evaluated on different test images or transformation draws "
                                   f"({arm}: {'; '.join(sorted(set(keys[arm].values())))} — {r}: "
                                   f"{'; '.join(sorted(set(keys[r].values())))}); re-evaluate them with the runs' "
                                   "own protocol (`dainv reproduce` does)")  # fmt: skip
    return out


def _compare_matched(repro: Reproduction, scores: Mapping[str, Mapping[str, np.ndarray]], ref: str, seed: int,
                     pick=lambda r: r.final_eval):  # fmt: skip
    """:func:`_compare` of every arm against its reference (:func:`references`), except the
    pairs :func:`unpaired` refuses."""
    refs, out = references(repro, ref), {}
    refused = {name.split(" − ")[0] for name in unpaired(repro, ref, pick)}
    for r in dict.fromkeys(refs.values()):
        group = {a: s for a, s in scores.items() if a == r or (refs.get(a) == r and a not in refused)}
        out.update(_compare(group, r, seed))
    return out


def _scores_by_arm(repro: Reproduction, pick) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm in repro.arms:
        evals = [e for r in repro.results(arm) if (e := pick(r)) is not None and e.scores]
        layers = order_layers([la for e in evals for la in e.layers], [la for e in evals for la in e.layers])
        for la in layers:
            if (x := _pooled(evals, la)) is not None:
                out.setdefault(arm, {})[la] = x
    return out


def comparisons(repro: Reproduction, ref: str = REFERENCE, seed: int = 0) -> dict[str, Any]:
    """Per other arm and layer, the difference of its median invariance from ``ref``'s with a
    95 % paired bootstrap CI (:data:`N_BOOT` resamples of the test images, seeds pooled)."""
    return _compare_matched(repro, _scores_by_arm(repro, lambda r: r.final_eval), ref, seed)


def _final_epoch(run: RunResult) -> int | None:
    if run.final_eval is None or run.stale_reason:
        return None
    return run.final_eval.epoch or run.epochs_planned


def gap_vs_epochs(repro: Reproduction, ref: str = REFERENCE, seed: int = 0) -> dict[str, Any]:
    """The comparisons of :func:`comparisons` at every evaluated epoch: ``eval-epoch-NNNN/``
    folders and the final ``eval/`` (when it is not stale). ``{"epochs": [...], "pairs":
    {"ARM − REF": {layer: [{"epoch", "diff", "lo", "hi", "includes_zero", ...}]}}}``; empty when
    no run has evaluations of kept checkpoints."""
    if not any(r.epoch_evals for r in repro.all_results()):
        return {}
    epochs = sorted({e for r in repro.all_results() for e in r.epoch_evals}
                    | {e for r in repro.all_results() if (e := _final_epoch(r)) is not None})
    pairs: dict[str, dict[str, list]] = {}
    refused: dict[int, dict[str, str]] = {}
    for ep in epochs:
        def pick(r: RunResult, ep: int = ep) -> EvalResult | None:
            return r.epoch_evals.get(ep) or (r.final_eval if _final_epoch(r) == ep else None)

        for name, by_layer in _compare_matched(repro, _scores_by_arm(repro, pick), ref, seed, pick).items():
            for layer, ci in by_layer.items():
                pairs.setdefault(name, {}).setdefault(layer, []).append({"epoch": ep, **ci})
        if why := unpaired(repro, ref, pick):
            refused[ep] = why
    used = sorted({p["epoch"] for d in pairs.values() for pts in d.values() for p in pts})
    return {"epochs": used, "pairs": pairs, "not_compared": refused} if pairs or refused else {}


# ------------------------------------------------------------------------------------------
# Training time
# ------------------------------------------------------------------------------------------


def _timed_epochs(run: RunResult) -> list[dict[str, Any]]:
    rows = [m for m in run.metrics if finite(m.get("epoch_time_s"))]
    # The first epoch carries start-up costs (compilation, caches, data loading warm-up).
    return rows[1:] if len(rows) > 1 else rows


def _load(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    loads = [float(m["load_avg"]) for m in rows if finite(m.get("load_avg"))]
    cpus = [int(m["cpu_count"]) for m in rows if finite(m.get("cpu_count"))]
    if not loads or not cpus:
        return {"recorded": False, "max_load_avg": None, "cpu_count": None, "overloaded": None}
    return {"recorded": True, "max_load_avg": max(loads), "cpu_count": min(cpus),
            "overloaded": max(loads) > min(cpus)}


def _runs_of(epochs: Sequence[int]) -> list[list[int]]:
    """Sorted epochs as ``[first, last]`` runs of consecutive ones (a long run's list stays short)."""
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
        timed = _timed_epochs(r)
        rows += timed
        if timed:
            used[r.seed] = _runs_of([int(m["epoch"]) for m in timed])
    if not rows:
        return None
    times = np.array([float(m["epoch_time_s"]) for m in rows])
    per_epoch = [float(m["samples_per_s"]) * float(m["epoch_time_s"]) for m in rows if finite(m.get("samples_per_s"))]
    median = float(np.median(times))
    samples = float(np.median(per_epoch)) if per_epoch else None
    return {
        "median_epoch_time_s": median,
        "mean_epoch_time_s": float(np.mean(times)),
        "n_epochs": int(times.size),
        "epochs_used": used,
        "samples_per_epoch": samples,
        "samples_per_s": samples / median if samples and median > 0 else None,
        "load": _load(rows),
    }


def overhead_stats(repro: Reproduction, ref: str = REFERENCE) -> dict[str, Any]:
    """Per arm the **median** epoch time (``epoch_time_s``; each run's first epoch left out when
    it logged more than one, epochs of all seeds pooled), samples/s = samples per epoch / that
    median, and the machine load (``load_avg`` vs ``cpu_count`` of ``metrics.jsonl``); for every
    other arm the overhead ``median / ref's median − 1``, ``reliable`` only when the load was
    recorded and never exceeded the cores for either arm, and neither arm was trained side by
    side with another (``reproduce --parallel``, listed in ``reproduce.json``)."""
    from dainv.report.paper import PAPER_OVERHEAD

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
        overhead[arm] = {
            "fraction": frac,
            "percent": 100.0 * frac,
            "load_recorded": all(x["recorded"] for x in loads),
            "overloaded": any(x["overloaded"] for x in loads),
            "concurrent": concurrent,
            "reliable": all(x["recorded"] and not x["overloaded"] for x in loads) and not concurrent,
        }
    return {"arms": arms, "overhead_vs_baseline": overhead, "paper_percent": 100 * PAPER_OVERHEAD,
            "reference": "make bench (the paired step benchmark, benchmarks/)"}


# ------------------------------------------------------------------------------------------
# Curves over epochs
# ------------------------------------------------------------------------------------------


def dai_loss_curves(repro: Reproduction, arm: str, key: str = "dai") -> dict[str, dict[str, list]]:
    """Per layer: epochs, mean over seeds of L_l (Eq. 3), and the number of seeds per epoch.
    ``key``: ``dai`` (all pairs in the denominator) or ``dai_same_class`` (same-class pairs)."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in repro.results(arm):
        for m in r.metrics:
            for layer, v in (m.get(key) or {}).items() if isinstance(m.get(key), dict) else ():
                if finite(v):
                    acc.setdefault(layer, {}).setdefault(int(m["epoch"]), []).append(float(v))
    ref = _arm_layers(repro.results(arm))
    out = {}
    for layer in order_layers(acc, ref):
        eps = sorted(acc[layer])
        out[layer] = {"epoch": eps, "mean": [float(np.mean(acc[layer][e])) for e in eps],
                      "n": [len(acc[layer][e]) for e in eps]}
    return out


def metric_curve(repro: Reproduction, arm: str, key: str) -> dict[str, list]:
    by_epoch: dict[int, list[float]] = {}
    for r in repro.results(arm):
        for m in r.metrics:
            if finite(m.get(key)):
                by_epoch.setdefault(int(m["epoch"]), []).append(float(m[key]))
    eps = sorted(by_epoch)
    return {
        "epoch": eps,
        "mean": [float(np.mean(by_epoch[e])) for e in eps],
        "sd": [float(np.std(by_epoch[e], ddof=1)) if len(by_epoch[e]) > 1 else 0.0 for e in eps],
        "n": [len(by_epoch[e]) for e in eps],
    }
