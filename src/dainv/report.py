"""The reproduction report: tables, figures, ``report.md``, a self-contained ``report.html``.

A *reproduction folder* holds ``reproduce.json`` and one run folder per (arm, seed); a *run
folder* holds ``config.yaml``, ``meta.json``, ``metrics.jsonl`` and, once evaluated,
``eval/summary.json`` and ``eval/scores.npz`` (SPEC §5–§6). :func:`build_report` reads all of it
and writes, into the reproduction folder:

* ``figures/fig1_invariance.{png,svg}`` — box plots of the invariance score (Eq. 2) per layer,
  arms side by side, the paper's medians as markers (the paper's Figure 1);
* ``figures/fig2_dai_loss.{png,svg}`` — per-layer DAI loss L_l (Eq. 3) over epochs, one panel per
  arm (the paper's Figure 2);
* ``figures/fig_per_transform.{png,svg}`` — median invariance per layer × transformation (only when
  the summaries hold ``per_transform``);
* ``figures/fig_accuracy.{png,svg}`` — test accuracy over epochs per arm;
* ``report.md``, ``report.html`` (figures embedded as base64 PNG) and ``results.json`` (every
  number of the tables, machine-readable).

Every number in the report comes from the loaded files, except the paper's numbers (the
constants below, SPEC §7), which are always labelled as the paper's. Unfinished or missing runs
are reported as such and left out of the statistics — never filled in. Any subset of arms and
any number of seeds works; with several seeds, accuracies are given as mean ± sd and invariance
scores are pooled.

Command line: ``python -m dainv.report REPRO_DIR``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dainv.errors import DataError, RunError

__all__ = [
    "LAYERS",
    "PAPER_ACCURACY",
    "PAPER_ACCURACY_THESIS",
    "PAPER_MEDIANS",
    "PAPER_MEDIAN_LAYERS",
    "PAPER_OVERHEAD",
    "FIGURE_NAMES",
    "RunResult",
    "Reproduction",
    "FigureResult",
    "load_run",
    "load_reproduction",
    "accuracy_stats",
    "invariance_stats",
    "per_transform_stats",
    "overhead_stats",
    "missing_sentences",
    "findings",
    "collect_results",
    "make_figures",
    "build_report",
]

# --------------------------------------------------------------------------------------------
# The paper's numbers (SPEC §7)
# --------------------------------------------------------------------------------------------

#: Layer names in network order: pixel space, then the 9 convolutions of All-CNN-C.
LAYERS: tuple[str, ...] = ("input",) + tuple(f"conv{i}" for i in range(1, 10))

#: All-CNN-C on CIFAR-10, test accuracy, CCN 2019 paper.
PAPER_ACCURACY: dict[str, float] = {"baseline": 0.915, "dai": 0.922}
#: The same, from the table of the thesis chapter.
PAPER_ACCURACY_THESIS: dict[str, float] = {"baseline": 0.9148, "dai": 0.9247}

#: Layers of :data:`PAPER_MEDIANS` ("input, 1…8"; the thesis figure gives no value for conv9).
PAPER_MEDIAN_LAYERS: tuple[str, ...] = LAYERS[:9]
#: Median invariance score per layer, read off the thesis figure (±0.02), layers input, conv1…conv8.
PAPER_MEDIANS: dict[str, list[float]] = {
    "baseline": [0.55, 0.49, 0.37, 0.41, 0.42, 0.46, 0.48, 0.50, 0.48],
    "dai": [0.55, 0.57, 0.49, 0.59, 0.87, 0.95, 0.96, 0.99, 0.99],
}
#: DAI's training-time overhead over the baseline reported by the paper ("about 10 %").
PAPER_OVERHEAD: float = 0.10
#: Epochs of the paper's training runs.
PAPER_EPOCHS: int = 350
#: Presets long enough to show the size of the paper's effect.
LONG_PRESETS: tuple[str, ...] = ("cpu-short", "paper")
#: Layers the automatic "what this shows" section compares.
FINDING_LAYERS: tuple[str, ...] = ("conv5", "conv6", "conv7", "conv8", "conv9")

FIGURE_NAMES: tuple[str, ...] = (
    "fig1_invariance",
    "fig2_dai_loss",
    "fig_per_transform",
    "fig_accuracy",
)

_TRANSFORMS = ("rotation", "translation", "zoom", "shear", "flip", "brightness", "contrast")
_ACC_KEYS = ("single_view", "light_tta10")
_ACC_LABELS = {"single_view": "single view", "light_tta10": "light TTA (10 views)"}
# Paul Tol's colour-blind-safe palette; other arms get the rest in turn.
_ARM_COLORS = {"baseline": "#4477AA", "dai": "#EE6677", "control": "#228833"}
_EXTRA_COLORS = ("#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_ARM_ORDER = ("baseline", "dai", "control")
_DPI = 150


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Everything one run folder holds. Missing parts are ``{}`` / ``[]`` / ``None``, and
    :attr:`problems` says what could not be read."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    scores: dict[str, np.ndarray] | None = None
    problems: list[str] = field(default_factory=list)
    arm: str | None = None
    seed: int | str | None = None

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown")) if self.meta else "unknown"

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def epochs_done(self) -> int:
        return max((int(m["epoch"]) for m in self.metrics), default=0)

    @property
    def epochs_planned(self) -> int | None:
        epochs = _get(self.config, "train", "epochs")
        return int(epochs) if isinstance(epochs, int | float) else None

    @property
    def evaluated(self) -> bool:
        return self.summary is not None


@dataclass
class Reproduction:
    """A reproduction folder: its manifest and one :class:`RunResult` (or ``None`` when the run
    folder does not exist) per arm and seed."""

    path: Path
    manifest: dict[str, Any]
    preset: str | None
    preset_note: str | None
    arms: list[str]
    seeds: list[int | str]
    runs: dict[str, dict[int | str, RunResult | None]]
    folders: dict[str, dict[int | str, str]]

    def results(self, arm: str) -> list[RunResult]:
        """The existing runs of ``arm``, in seed order."""
        return [r for r in self.runs.get(arm, {}).values() if r is not None]

    @property
    def machine(self) -> dict[str, Any]:
        m = self.manifest.get("machine")
        return m if isinstance(m, dict) else {}


def _get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        problems.append(f"`{path.name}` could not be read ({err})")
        return None


def _read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problems.append(f"`metrics.jsonl` could not be read ({err})")
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(row, dict) or not _finite(row.get("epoch")):
            bad += 1
            continue
        # A resumed run may log an epoch twice: the later line wins.
        by_epoch[int(row["epoch"])] = row
    if bad:
        problems.append(
            f"{bad} line(s) of `metrics.jsonl` are not complete epoch records (skipped; a run "
            "still writing may leave a partial last line)"
        )
    return [by_epoch[e] for e in sorted(by_epoch)]


def _read_scores(path: Path, problems: list[str]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        problems.append(f"`eval/scores.npz` could not be read ({err})")
        return None


def load_run(
    run_dir: str | Path, arm: str | None = None, seed: int | str | None = None
) -> RunResult:
    """Read a run folder. Missing or unreadable files are recorded in ``problems``; only a
    folder that does not exist raises :class:`~dainv.errors.RunError`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run folder {path} does not exist (or is not a folder)")
    problems: list[str] = []
    config: dict[str, Any] = {}
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            problems.append(f"`config.yaml` could not be read ({err})")
    meta = _read_json(path / "meta.json", problems)
    summary = _read_json(path / "eval" / "summary.json", problems)
    run = RunResult(
        path=path,
        config=config,
        meta=meta if isinstance(meta, dict) else {},
        metrics=_read_metrics(path / "metrics.jsonl", problems),
        summary=summary if isinstance(summary, dict) else None,
        scores=_read_scores(path / "eval" / "scores.npz", problems),
        problems=problems,
        arm=arm if arm is not None else (config.get("name") if config else None),
        seed=seed if seed is not None else (config.get("seed") if config else None),
    )
    return run


def _seed_key(s: Any) -> int | str:
    if isinstance(s, int):
        return s
    s = str(s)
    return int(s) if re.fullmatch(r"-?\d+", s) else s


def _order_arms(arms: Iterable[str]) -> list[str]:
    arms = list(dict.fromkeys(arms))
    known = [a for a in _ARM_ORDER if a in arms]
    return known + [a for a in arms if a not in known]


def load_reproduction(repro_dir: str | Path) -> Reproduction:
    """Read a reproduction folder: ``reproduce.json`` and the run folders it names.

    Without ``reproduce.json``, every sub-folder named ``ARM-sSEED`` that holds a run is taken.
    Run folders that do not exist are kept as ``None`` (reported as missing)."""
    path = Path(repro_dir)
    if not path.is_dir():
        raise RunError(f"reproduction folder {path} does not exist (or is not a folder)")
    problems: list[str] = []
    manifest = _read_json(path / "reproduce.json", problems)
    if problems:
        raise DataError(
            f"{path / 'reproduce.json'}: {problems[0]}; fix or delete it (without it the run "
            "folders ARM-sSEED are found by name)"
        )
    folders: dict[str, dict[int | str, str]] = {}
    if isinstance(manifest, dict) and isinstance(manifest.get("runs"), dict):
        for arm, by_seed in manifest["runs"].items():
            if isinstance(by_seed, dict):
                folders[str(arm)] = {_seed_key(s): str(f) for s, f in by_seed.items()}
    else:
        manifest = manifest if isinstance(manifest, dict) else {}
        for sub in sorted(path.iterdir()):
            m = re.fullmatch(r"(.+)-s(\d+)", sub.name)
            if (
                m
                and sub.is_dir()
                and any((sub / f).exists() for f in ("config.yaml", "meta.json", "metrics.jsonl"))
            ):
                folders.setdefault(m.group(1), {})[int(m.group(2))] = sub.name
        if not folders:
            raise DataError(
                f"{path} holds neither reproduce.json nor run folders named ARM-sSEED; "
                "point the report at the folder `dainv reproduce` wrote"
            )
    arms = [str(a) for a in manifest.get("arms", [])] if manifest.get("arms") else []
    arms = _order_arms(arms + list(folders))
    seeds: list[int | str] = [_seed_key(s) for s in manifest.get("seeds", []) or []]
    for by_seed in folders.values():
        seeds += [s for s in by_seed if s not in seeds]
    runs: dict[str, dict[int | str, RunResult | None]] = {}
    for arm in arms:
        runs[arm] = {}
        folders.setdefault(arm, {})
        for seed in seeds:
            folder = folders[arm].setdefault(seed, f"{arm}-s{seed}")
            run_path = path / folder
            runs[arm][seed] = load_run(run_path, arm, seed) if run_path.is_dir() else None
    preset = manifest.get("preset")
    note = manifest.get("preset_note")
    if preset is None:
        for arm in arms:
            for r in runs[arm].values():
                if r is not None and r.config.get("preset"):
                    preset = r.config["preset"]
    return Reproduction(
        path=path,
        manifest=manifest,
        preset=str(preset) if preset is not None else None,
        preset_note=str(note) if note else None,
        arms=arms,
        seeds=seeds,
        runs=runs,
        folders=folders,
    )


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def _mean_sd(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values]
    n = len(vals)
    mean = float(np.mean(vals)) if n else None
    sd = float(np.std(vals, ddof=1)) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd}


def _ordered_layers(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    known = [layer for layer in LAYERS if layer in names]
    return known + [n for n in names if n not in known]


def accuracy_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: each accuracy of ``eval/summary.json`` (single view, light TTA, …) as
    ``{"n", "mean", "sd", "values": {seed: acc}}``, and the last logged ``test_acc`` of
    ``metrics.jsonl`` (with its epoch) as ``last_epoch_test_acc``."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        keys = list(_ACC_KEYS)
        for r in runs:
            for k in _get(r.summary, "accuracy") or {}:
                if k not in keys:
                    keys.append(k)
        arm_out: dict[str, Any] = {}
        for k in keys:
            vals = {r.seed: float(v) for r in runs if _finite(v := _get(r.summary, "accuracy", k))}
            arm_out[k] = {**_mean_sd(list(vals.values())), "values": vals}
        last: dict[Any, float] = {}
        last_epoch: dict[Any, int] = {}
        for r in runs:
            logged = [m for m in r.metrics if _finite(m.get("test_acc"))]
            if logged:
                last[r.seed] = float(logged[-1]["test_acc"])
                last_epoch[r.seed] = int(logged[-1]["epoch"])
        arm_out["last_epoch_test_acc"] = {
            **_mean_sd(list(last.values())),
            "values": last,
            "epoch": last_epoch,
        }
        out[arm] = arm_out
    return out


def _box_stats(x: np.ndarray) -> dict[str, float]:
    q1, med, q3 = (float(v) for v in np.percentile(x, [25, 50, 75]))
    iqr = q3 - q1
    lo = x[x >= q1 - 1.5 * iqr]
    hi = x[x <= q3 + 1.5 * iqr]
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "mean": float(np.mean(x)),
        "whislo": float(lo.min()) if lo.size else q1,
        "whishi": float(hi.max()) if hi.size else q3,
    }


def invariance_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm: ``{"source", "seeds", "layers": {layer: stats}}``; stats hold median, q1, q3,
    mean, box-plot whiskers (1.5 IQR), the number of scores and the per-seed medians.

    Source ``"scores.npz"``: computed from the scores of every seed, pooled (non-finite scores
    dropped and counted). Source ``"summary.json"``: no scores file, the summaries' quartiles
    (mean over seeds of the per-seed values), no whiskers. Arms with neither are left out."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = repro.results(arm)
        with_scores = [r for r in runs if r.scores]
        if with_scores:
            layers = _ordered_layers(k for r in with_scores for k in r.scores)
            lstats: dict[str, Any] = {}
            for layer in layers:
                parts = [r.scores[layer].ravel() for r in with_scores if layer in r.scores]
                pooled = np.concatenate(parts).astype(np.float64)
                ok = np.isfinite(pooled)
                x = pooled[ok]
                if x.size == 0:
                    continue
                per_seed = {}
                for r in with_scores:
                    if layer in r.scores:
                        v = r.scores[layer].ravel().astype(np.float64)
                        v = v[np.isfinite(v)]
                        if v.size:
                            per_seed[r.seed] = float(np.median(v))
                lstats[layer] = {
                    **_box_stats(x),
                    "n_scores": int(x.size),
                    "n_nonfinite": int((~ok).sum()),
                    "per_seed_median": per_seed,
                }
            out[arm] = {
                "source": "scores.npz",
                "seeds": [r.seed for r in with_scores],
                "layers": lstats,
            }
            continue
        with_summary = [
            r for r in runs if isinstance(_get(r.summary, "invariance", "median"), dict)
        ]
        if not with_summary:
            continue
        layers = _ordered_layers(
            k for r in with_summary for k in _get(r.summary, "invariance", "median")
        )
        lstats = {}
        for layer in layers:
            vals: dict[str, list[float]] = {}
            per_seed = {}
            for r in with_summary:
                for q in ("median", "q1", "q3", "mean"):
                    v = _get(r.summary, "invariance", q, layer)
                    if _finite(v):
                        vals.setdefault(q, []).append(float(v))
                        if q == "median":
                            per_seed[r.seed] = float(v)
            if "median" not in vals:
                continue
            s = {q: float(np.mean(v)) for q, v in vals.items()}
            s.setdefault("q1", s["median"])
            s.setdefault("q3", s["median"])
            s["whislo"], s["whishi"] = s["q1"], s["q3"]
            n_img = _get(with_summary[0].summary, "invariance", "n_images")
            n_tr = _get(with_summary[0].summary, "invariance", "n_transforms")
            n = n_img * n_tr * len(with_summary) if _finite(n_img) and _finite(n_tr) else None
            lstats[layer] = {**s, "n_scores": n, "n_nonfinite": None, "per_seed_median": per_seed}
        out[arm] = {
            "source": "summary.json",
            "seeds": [r.seed for r in with_summary],
            "layers": lstats,
        }
    return out


def per_transform_stats(repro: Reproduction) -> dict[str, dict[str, Any]]:
    """Per arm with ``per_transform`` in its summaries: ``{"seeds", "values": {transform:
    {layer: median}}}`` — the mean over seeds of the per-seed medians."""
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        runs = [r for r in repro.results(arm) if isinstance(_get(r.summary, "per_transform"), dict)]
        if not runs:
            continue
        acc: dict[str, dict[str, list[float]]] = {}
        for r in runs:
            for t, by_layer in r.summary["per_transform"].items():
                if isinstance(by_layer, dict):
                    for layer, v in by_layer.items():
                        if _finite(v):
                            acc.setdefault(t, {}).setdefault(layer, []).append(float(v))
        if not acc:
            continue
        transforms = [t for t in _TRANSFORMS if t in acc] + [t for t in acc if t not in _TRANSFORMS]
        out[arm] = {
            "seeds": [r.seed for r in runs],
            "values": {
                t: {layer: float(np.mean(acc[t][layer])) for layer in _ordered_layers(acc[t])}
                for t in transforms
            },
        }
    return out


def _timed_epochs(run: RunResult) -> list[dict[str, Any]]:
    rows = [m for m in run.metrics if _finite(m.get("epoch_time_s"))]
    # The first epoch carries start-up costs (compilation, caches, data loading warm-up).
    return rows[1:] if len(rows) > 1 else rows


def overhead_stats(repro: Reproduction) -> dict[str, Any]:
    """Per arm the mean epoch time (``epoch_time_s``; each run's first epoch left out when it
    logged more than one, epochs of all seeds pooled) and mean ``samples_per_s``; for every arm
    other than baseline the overhead ``mean_time / baseline_mean_time − 1``."""
    arms: dict[str, Any] = {}
    for arm in repro.arms:
        times, rates, used = [], [], {}
        for r in repro.results(arm):
            rows = _timed_epochs(r)
            times += [float(m["epoch_time_s"]) for m in rows]
            rates += [float(m["samples_per_s"]) for m in rows if _finite(m.get("samples_per_s"))]
            if rows:
                used[r.seed] = [int(m["epoch"]) for m in rows]
        if times:
            arms[arm] = {
                "mean_epoch_time_s": float(np.mean(times)),
                "n_epochs": len(times),
                "epochs_used": used,
                "mean_samples_per_s": float(np.mean(rates)) if rates else None,
            }
    base = arms.get("baseline")
    overhead: dict[str, Any] = {}
    for arm, s in arms.items():
        if arm == "baseline" or base is None or base["mean_epoch_time_s"] <= 0:
            continue
        frac = s["mean_epoch_time_s"] / base["mean_epoch_time_s"] - 1.0
        overhead[arm] = {"fraction": frac, "percent": 100.0 * frac}
    return {"arms": arms, "overhead_vs_baseline": overhead, "paper_percent": 100 * PAPER_OVERHEAD}


def _run_gaps(repro: Reproduction, arm: str, seed: Any) -> list[str]:
    run = repro.runs[arm][seed]
    folder = repro.folders.get(arm, {}).get(seed, "?")
    if run is None:
        return [f"run folder `{folder}` does not exist (not started)"]
    gaps: list[str] = []
    if not run.meta:
        gaps.append("no `meta.json`")
    elif not run.finished:
        gaps.append(
            f"not finished (`meta.json` status '{run.status}': still running or interrupted)"
        )
    planned = run.epochs_planned
    if not run.metrics:
        gaps.append("no epoch logged in `metrics.jsonl`")
    elif planned is not None and run.epochs_done < planned:
        gaps.append(f"{run.epochs_done} of {planned} epochs logged")
    if run.summary is None:
        gaps.append(
            "not evaluated (no `eval/summary.json`: no final accuracy or invariance numbers)"
        )
    elif run.scores is None:
        gaps.append("no `eval/scores.npz` (invariance from the summary's quartiles only)")
    gaps += run.problems
    return gaps


def missing_sentences(repro: Reproduction) -> dict[str, str]:
    """One sentence per arm that has something missing or unfinished (arms complete: absent)."""
    out: dict[str, str] = {}
    for arm in repro.arms:
        parts = []
        for seed in repro.runs[arm]:
            gaps = _run_gaps(repro, arm, seed)
            if gaps:
                parts.append(f"seed {seed}: " + "; ".join(gaps) + ".")
        if parts:
            out[arm] = f"**{arm}** — " + " ".join(parts)
    return out


def _dai_loss_curves(repro: Reproduction, arm: str) -> dict[str, dict[str, list]]:
    """Per layer: epochs, mean over seeds of L_l, and the number of seeds per epoch."""
    acc: dict[str, dict[int, list[float]]] = {}
    for r in repro.results(arm):
        for m in r.metrics:
            dai = m.get("dai")
            if isinstance(dai, dict):
                for layer, v in dai.items():
                    if _finite(v):
                        acc.setdefault(layer, {}).setdefault(int(m["epoch"]), []).append(float(v))
    out = {}
    for layer in _ordered_layers(acc):
        eps = sorted(acc[layer])
        out[layer] = {
            "epoch": eps,
            "mean": [float(np.mean(acc[layer][e])) for e in eps],
            "n": [len(acc[layer][e]) for e in eps],
        }
    return out


def _metric_curve(repro: Reproduction, arm: str, key: str) -> dict[str, list]:
    by_epoch: dict[int, list[float]] = {}
    for r in repro.results(arm):
        for m in r.metrics:
            if _finite(m.get(key)):
                by_epoch.setdefault(int(m["epoch"]), []).append(float(m[key]))
    eps = sorted(by_epoch)
    return {
        "epoch": eps,
        "mean": [float(np.mean(by_epoch[e])) for e in eps],
        "sd": [float(np.std(by_epoch[e], ddof=1)) if len(by_epoch[e]) > 1 else 0.0 for e in eps],
        "n": [len(by_epoch[e]) for e in eps],
    }


def _paper_median(arm: str, layer: str) -> float | None:
    if arm in PAPER_MEDIANS and layer in PAPER_MEDIAN_LAYERS:
        return PAPER_MEDIANS[arm][PAPER_MEDIAN_LAYERS.index(layer)]
    return None


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _paper_pct(x: float | None) -> str:
    return "—" if x is None else f"{round(100 * x, 2):g} %"


def findings(
    repro: Reproduction,
    acc: Mapping[str, Any] | None = None,
    inv: Mapping[str, Any] | None = None,
) -> list[str]:
    """The automatic "what this shows" sentences (Markdown), every number from the files."""
    acc = accuracy_stats(repro) if acc is None else acc
    inv = invariance_stats(repro) if inv is None else inv
    out: list[str] = []

    def med(arm: str, layer: str) -> float | None:
        return _get(inv, arm, "layers", layer, "median")

    # Invariance at the deep layers, DAI vs baseline (and vs the control when there is one).
    if "dai" in inv and "baseline" in inv:
        layers = [
            layer
            for layer in FINDING_LAYERS
            if med("dai", layer) is not None and med("baseline", layer) is not None
        ]
        if layers:
            parts = []
            above = 0
            for layer in layers:
                d, b = med("dai", layer), med("baseline", layer)
                above += d > b
                word = "above" if d > b else ("equal to" if d == b else "below")
                paper = ""
                pd, pb = _paper_median("dai", layer), _paper_median("baseline", layer)
                if pd is not None and pb is not None:
                    paper = f" (paper {pd:.2f} vs {pb:.2f})"
                parts.append(
                    f"`{layer}` DAI {d:.3f} vs baseline {b:.3f}: {word} by {abs(d - b):.3f}{paper}"
                )
            out.append(
                f"Median invariance (Eq. 2) at {layers[0]}–{layers[-1]}: DAI's median is above "
                f"the baseline's at {above} of {len(layers)} layers — " + "; ".join(parts) + "."
            )
        else:
            out.append(
                "No layer from conv5 to conv9 has invariance scores for both DAI and baseline."
            )
    else:
        lacking = [
            f"`{a}`" + ("" if a in repro.arms else " (not an arm of this reproduction)")
            for a in ("baseline", "dai")
            if a not in inv
        ]
        out.append(
            "DAI's invariance cannot be compared with the baseline's: no invariance scores for "
            + " and ".join(lacking)
            + "."
        )
    if "dai" in inv and "control" in inv:
        layers = [
            layer
            for layer in FINDING_LAYERS
            if med("dai", layer) is not None and med("control", layer) is not None
        ]
        if layers:
            diffs = "; ".join(
                f"`{layer}` {med('dai', layer):.3f} vs {med('control', layer):.3f} "
                f"({med('dai', layer) - med('control', layer):+.3f})"
                for layer in layers
            )
            out.append(
                "DAI vs the control (same M views per seed image, α = 0 — separates the effect of "
                f"the loss from that of the in-batch views), median invariance: {diffs}."
            )

    # Accuracy.
    d = _get(acc, "dai", "single_view", "mean")
    b = _get(acc, "baseline", "single_view", "mean")
    if d is not None and b is not None:
        out.append(
            f"Single-view test accuracy: DAI {_pct(d)} vs baseline {_pct(b)} "
            f"({100 * (d - b):+.2f} points; the CCN paper: "
            f"{100 * (PAPER_ACCURACY['dai'] - PAPER_ACCURACY['baseline']):+.1f} points after "
            f"{PAPER_EPOCHS} epochs)."
        )

    # DAI loss trend (paper's Figure 2: the baseline's rises, DAI's falls).
    trends = []
    for arm in repro.arms:
        curves = _dai_loss_curves(repro, arm)
        if not curves:
            continue
        eps = sorted(set.intersection(*(set(c["epoch"]) for c in curves.values())))
        if len(eps) < 2:
            continue
        first = np.mean([c["mean"][c["epoch"].index(eps[0])] for c in curves.values()])
        last = np.mean([c["mean"][c["epoch"].index(eps[-1])] for c in curves.values()])
        trend = "rising" if last > first else "falling" if last < first else "flat"
        trends.append(f"{arm} {first:.3f} (epoch {eps[0]}) → {last:.3f} (epoch {eps[-1]}), {trend}")
    if trends:
        out.append(
            "DAI loss L_l (Eq. 3), mean over layers: "
            + "; ".join(trends)
            + ". In the paper (Figure 2) the baseline's rises while the DAI model's falls after a "
            "few epochs."
        )

    if repro.preset != "paper":
        lo_layer, hi_layer = "conv4", "conv8"
        vals = [_paper_median("dai", la) for la in PAPER_MEDIAN_LAYERS[4:9]]
        out.append(
            f"**This is the `{repro.preset or 'unknown'}` preset, not `paper`.** The size of the "
            f"paper's effect (DAI medians ≈{min(vals):.2f}–{max(vals):.2f} at "
            f"{lo_layer}–{hi_layer}, after {PAPER_EPOCHS} epochs) needs the longer presets "
            f"(`{LONG_PRESETS[0]}`, `{LONG_PRESETS[1]}`); the numbers here show the direction of "
            "the effect at best, not its size."
        )
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def _run_table_rows(repro: Reproduction) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm in repro.arms:
        out[arm] = {}
        for seed, r in repro.runs[arm].items():
            entry: dict[str, Any] = {
                "folder": repro.folders[arm][seed],
                "exists": r is not None,
                "missing": _run_gaps(repro, arm, seed),
            }
            if r is not None:
                entry.update(
                    status=r.status,
                    epochs_done=r.epochs_done,
                    epochs_planned=r.epochs_planned,
                    wall_time_s=r.meta.get("wall_time_s"),
                    train_time_s=r.meta.get("train_time_s"),
                    started=r.meta.get("started"),
                    finished=r.meta.get("finished"),
                    device=r.meta.get("device"),
                    torch=r.meta.get("torch"),
                    git_commit=r.meta.get("git_commit"),
                )
            out[arm][seed] = entry
    return out


def collect_results(repro: Reproduction) -> dict[str, Any]:
    """Every number of the report's tables, as written to ``results.json``."""
    acc = accuracy_stats(repro)
    inv = invariance_stats(repro)
    return {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "reproduction": str(repro.path),
        "preset": repro.preset,
        "preset_note": repro.preset_note,
        "arms": repro.arms,
        "seeds": repro.seeds,
        "machine": repro.machine,
        "runs": _run_table_rows(repro),
        "accuracy": acc,
        "paper_accuracy": {"ccn": PAPER_ACCURACY, "thesis": PAPER_ACCURACY_THESIS},
        "invariance": inv,
        "paper_medians": {
            arm: dict(zip(PAPER_MEDIAN_LAYERS, vals)) for arm, vals in PAPER_MEDIANS.items()
        },
        "per_transform": per_transform_stats(repro),
        "training_time": overhead_stats(repro),
        "missing": missing_sentences(repro),
        "findings": findings(repro, acc, inv),
    }


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


@dataclass
class FigureResult:
    """One figure: its files (PNG first, then SVG; empty when skipped) and, when skipped, why."""

    name: str
    title: str
    caption: str
    paths: list[Path] = field(default_factory=list)
    note: str | None = None

    @property
    def png(self) -> Path | None:
        return next((p for p in self.paths if p.suffix == ".png"), None)


def _arm_color(arms: Sequence[str], arm: str) -> str:
    if arm in _ARM_COLORS:
        return _ARM_COLORS[arm]
    others = [a for a in arms if a not in _ARM_COLORS]
    return _EXTRA_COLORS[others.index(arm) % len(_EXTRA_COLORS)] if arm in others else "#777777"


def _arm_label(repro: Reproduction, arm: str) -> str:
    """``dai (M=8, α=0.1)`` from the arm's config (nothing added when the config lacks them)."""
    for r in repro.results(arm):
        views, alpha = _get(r.config, "train", "views"), _get(r.config, "train", "alpha")
        bits = []
        if _finite(views):
            bits.append(f"M={views:g}")
        if _finite(alpha):
            bits.append(f"α={alpha:g}")
        if bits:
            return f"{arm} ({', '.join(bits)})"
    return arm


def _seed_text(seeds: Sequence[Any], pooled: str = "") -> str:
    seeds = list(seeds)
    if not seeds:
        return "no seeds"
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"seeds {', '.join(str(s) for s in seeds)}{pooled}"


def _figure(figsize: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    fig.savefig(png, dpi=_DPI, facecolor="white")
    fig.set_layout_engine("none")  # laid out by the first save; keeps the SVG identical
    fig.savefig(svg, format="svg", facecolor="white", metadata={"Date": None})
    return [png, svg]


def _fig_invariance(repro: Reproduction, inv: Mapping[str, Any]):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    arms = [a for a in repro.arms if _get(inv, a, "layers")]
    if not arms:
        return None
    layers = _ordered_layers(la for a in arms for la in inv[a]["layers"])
    fig = _figure((max(8.0, 0.95 * len(layers) + 2.5), 5.0))
    ax = fig.add_subplot()
    width = 0.8 / len(arms)
    handles = []
    paper_shown = False
    for ia, arm in enumerate(arms):
        color = _arm_color(repro.arms, arm)
        stats, pos = [], []
        for il, layer in enumerate(layers):
            s = inv[arm]["layers"].get(layer)
            if s is None:
                continue
            stats.append(
                {
                    "med": s["median"],
                    "q1": s["q1"],
                    "q3": s["q3"],
                    "whislo": s["whislo"],
                    "whishi": s["whishi"],
                    "fliers": [],
                }
            )
            pos.append(il + (ia - (len(arms) - 1) / 2) * width)
        ax.bxp(
            stats,
            positions=pos,
            widths=width * 0.8,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
            boxprops={"facecolor": color, "edgecolor": "#222222", "alpha": 0.85, "linewidth": 0.8},
            medianprops={"color": "black", "linewidth": 1.4},
            whiskerprops={"color": "#444444", "linewidth": 0.8},
            capprops={"color": "#444444", "linewidth": 0.8},
        )
        label = _arm_label(repro, arm)
        if inv[arm]["source"] != "scores.npz":
            label += " — quartiles from summary, no whiskers"
        handles.append(Patch(facecolor=color, edgecolor="#222222", label=label))
        # The paper's medians, on this arm's boxes.
        px, py = [], []
        for il, layer in enumerate(layers):
            pm = _paper_median(arm, layer)
            if pm is not None:
                px.append(il + (ia - (len(arms) - 1) / 2) * width)
                py.append(pm)
        if px:
            paper_shown = True
            ax.scatter(
                px,
                py,
                marker="D",
                s=22,
                facecolor="white",
                edgecolor=color,
                linewidth=1.5,
                zorder=5,
            )
    if paper_shown:
        handles.append(
            Line2D(
                [],
                [],
                marker="D",
                linestyle="none",
                markerfacecolor="white",
                markeredgecolor="#222222",
                markersize=5,
                label="paper median (thesis fig., ±0.02), edge = arm colour",
            )
        )
    ax.axhline(0, color="#888888", linewidth=0.8, linestyle=":", zorder=0)
    for il in range(len(layers) - 1):
        ax.axvline(il + 0.5, color="#eeeeee", linewidth=0.8, zorder=0)
    ax.set_xticks(range(len(layers)), layers)
    ax.set_xlim(-0.5, len(layers) - 0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("invariance score (Eq. 2)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )
    seeds = sorted({s for a in arms for s in inv[a]["seeds"]}, key=str)
    ns = {s["n_scores"] for a in arms for s in inv[a]["layers"].values()}
    nbox = (
        f"{ns.pop():,} scores per box" if len(ns) == 1 and None not in ns else "scores per box vary"
    )
    ax.set_title(
        f"Invariance per layer — preset {repro.preset or 'unknown'}, {_seed_text(seeds, ' (pooled)')}; "
        f"{nbox}; boxes: quartiles, whiskers: 1.5 IQR, no fliers",
        fontsize=10,
    )
    return fig


def _plain_log_labels(ax, lo: float, hi: float) -> None:
    """Label a log y axis with plain numbers (0.3, 0.5, 1) instead of 3×10⁻¹."""
    from matplotlib.ticker import FuncFormatter

    decades = math.log10(hi / lo)
    keep = set(range(1, 10)) if decades < 0.7 else ({2, 3, 5} if decades < 2 else set())

    def minor(v: float, _pos: int) -> str:
        mant = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if mant in keep else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))


def _fig_dai_loss(repro: Reproduction):
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    curves = {a: c for a in repro.arms if (c := _dai_loss_curves(repro, a))}
    if not curves:
        return None
    arms = list(curves)
    allv = [v for c in curves.values() for d in c.values() for v in d["mean"]]
    use_log = min(allv) > 0 and max(allv) / min(allv) > 3
    fig = _figure((4.2 * len(arms) + 1.6, 4.2))
    axes = fig.subplots(1, len(arms), sharex=True, sharey=True, squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    all_layers = _ordered_layers(la for c in curves.values() for la in c)
    colors = {la: cmap(i / max(1, len(all_layers) - 1) * 0.92) for i, la in enumerate(all_layers)}
    handles = {}
    for ax, arm in zip(axes, arms):
        n_ep = max(len(d["epoch"]) for d in curves[arm].values())
        for layer, d in curves[arm].items():
            (line,) = ax.plot(
                d["epoch"],
                d["mean"],
                color=colors[layer],
                linewidth=1.5,
                marker="o" if n_ep <= 25 else None,
                markersize=3,
                label=layer,
            )
            handles.setdefault(layer, line)
        n_seeds = len(repro.results(arm))
        ax.set_title(
            f"{_arm_label(repro, arm)}" + (f" — mean of {n_seeds} seeds" if n_seeds > 1 else ""),
            fontsize=10,
        )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both" if use_log else "major")
        if use_log:
            ax.set_yscale("log")
            _plain_log_labels(ax, min(allv), max(allv))
    axes[0].set_ylabel("DAI loss L_l (Eq. 3)" + (", log scale" if use_log else ""))
    fig.legend(
        [handles[la] for la in all_layers],
        all_layers,
        loc="outside right center",
        fontsize=8,
        title="layer",
    )
    seeds = sorted({r.seed for a in arms for r in repro.results(a)}, key=str)
    fig.suptitle(
        f"Per-layer DAI loss over training — preset {repro.preset or 'unknown'}, {_seed_text(seeds)}"
        + (" (M = 1: measured on monitoring batches of views)" if "baseline" in arms else ""),
        fontsize=10,
    )
    return fig


def _fig_per_transform(repro: Reproduction, pt: Mapping[str, Any]):
    import matplotlib
    from matplotlib.colors import Normalize, TwoSlopeNorm

    arms = [a for a in repro.arms if a in pt]
    if not arms:
        return None
    transforms = list(dict.fromkeys(t for a in arms for t in pt[a]["values"]))
    layers = _ordered_layers(la for a in arms for t in pt[a]["values"].values() for la in t)
    mats = {}
    for arm in arms:
        m = np.full((len(transforms), len(layers)), np.nan)
        for i, t in enumerate(transforms):
            for j, la in enumerate(layers):
                v = pt[arm]["values"].get(t, {}).get(la)
                if v is not None:
                    m[i, j] = v
        mats[arm] = m
    vals = np.concatenate([m[np.isfinite(m)] for m in mats.values()])
    vmin, vmax = float(vals.min()), float(vals.max())
    if vmin < 0 < vmax:
        cmap, norm = matplotlib.colormaps["RdBu"], TwoSlopeNorm(0.0, vmin, vmax)
    else:
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
        cmap, norm = matplotlib.colormaps["viridis"], Normalize(vmin, vmax)
    fig = _figure((0.75 * len(layers) + 2.8, (0.36 * len(transforms) + 0.9) * len(arms) + 0.6))
    axes = fig.subplots(len(arms), 1, squeeze=False)[:, 0]
    im = None
    for ax, arm in zip(axes, arms):
        m = mats[arm]
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, norm=norm, aspect="auto")
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if np.isfinite(m[i, j]):
                    r, g, b, _ = cmap(norm(m[i, j]))
                    light = 0.299 * r + 0.587 * g + 0.114 * b > 0.55
                    ax.text(
                        j,
                        i,
                        f"{m[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="black" if light else "white",
                        in_layout=False,
                    )
        ax.set_yticks(range(len(transforms)), transforms, fontsize=8)
        ax.set_xticks(range(len(layers)), layers, fontsize=8)
        n = len(pt[arm]["seeds"])
        ax.set_title(
            _arm_label(repro, arm) + (f" — mean of {n} seeds' medians" if n > 1 else ""),
            fontsize=9,
            loc="left",
        )
        ax.tick_params(length=0)
    fig.colorbar(im, ax=list(axes), label="median invariance score (Eq. 2)", shrink=0.9)
    seeds = sorted({s for a in arms for s in pt[a]["seeds"]}, key=str)
    fig.suptitle(
        f"Median invariance per transformation — preset {repro.preset or 'unknown'}, {_seed_text(seeds)}",
        fontsize=10,
    )
    return fig


def _fig_accuracy(repro: Reproduction):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    data = {}
    for arm in repro.arms:
        test, train = _metric_curve(repro, arm, "test_acc"), _metric_curve(repro, arm, "train_acc")
        if test["epoch"] or train["epoch"]:
            data[arm] = (test, train)
    if not data:
        return None
    fig = _figure((8.5, 4.8))
    ax = fig.add_subplot()
    handles = []
    band = False
    max_ep = max(max(t["epoch"] + tr["epoch"]) for t, tr in data.values())
    for arm, (test, train) in data.items():
        color = _arm_color(repro.arms, arm)
        mk = "o" if max_ep <= 25 else None
        if test["epoch"]:
            mean = 100 * np.asarray(test["mean"])
            ax.plot(test["epoch"], mean, color=color, linewidth=1.8, marker=mk, markersize=3.5)
            sd = 100 * np.asarray(test["sd"])
            if max(test["n"]) > 1:
                band = True
                ax.fill_between(
                    test["epoch"], mean - sd, mean + sd, color=color, alpha=0.2, linewidth=0
                )
        if train["epoch"]:
            ax.plot(
                train["epoch"],
                100 * np.asarray(train["mean"]),
                color=color,
                linewidth=1.0,
                linestyle="--",
                alpha=0.8,
            )
        n = len(repro.results(arm))
        handles.append(
            Line2D(
                [],
                [],
                color=color,
                linewidth=2,
                label=_arm_label(repro, arm) + (f", {n} seeds" if n > 1 else ""),
            )
        )
    handles.append(Line2D([], [], color="#444444", linewidth=1.8, label="test, single view"))
    handles.append(
        Line2D(
            [], [], color="#444444", linewidth=1.0, linestyle="--", label="train (augmented views)"
        )
    )
    for arm, v in PAPER_ACCURACY.items():
        if arm in data:
            ax.axhline(100 * v, color=_arm_color(repro.arms, arm), linestyle=":", linewidth=1.2)
    if any(a in data for a in PAPER_ACCURACY):
        handles.append(
            Line2D(
                [],
                [],
                color="#444444",
                linestyle=":",
                linewidth=1.2,
                label=f"paper (CCN), after {PAPER_EPOCHS} epochs",
            )
        )
    if band:
        handles.append(Patch(facecolor="#999999", alpha=0.3, label="±1 sd over seeds"))
    ax.set_ylim(0, 100)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="lower right", framealpha=0.9)
    seeds = sorted({r.seed for a in data for r in repro.results(a)}, key=str)
    ax.set_title(
        f"Accuracy over training — preset {repro.preset or 'unknown'}, {_seed_text(seeds)}"
        + (" (mean over seeds)" if len(seeds) > 1 else ""),
        fontsize=10,
    )
    return fig


def make_figures(
    repro: Reproduction,
    out_dir: str | Path | None = None,
    results: Mapping[str, Any] | None = None,
) -> list[FigureResult]:
    """Draw the four figures into ``out_dir`` (default ``REPRO/figures``) as PNG and SVG.
    A figure with no data is skipped (its stale files removed) and carries a ``note``."""
    out = Path(out_dir) if out_dir is not None else repro.path / "figures"
    inv = results["invariance"] if results else invariance_stats(repro)
    pt = results["per_transform"] if results else per_transform_stats(repro)
    specs = [
        (
            "fig1_invariance",
            "Figure 1 — invariance score per layer",
            "Invariance score (Eq. 2) of every test image under each heavier_eval transformation, "
            "per layer and arm (the paper's Figure 1). Diamonds: the paper's medians.",
            lambda: _fig_invariance(repro, inv),
            "no arm has invariance scores (no `eval/scores.npz` or `eval/summary.json`)",
        ),
        (
            "fig2_dai_loss",
            "Figure 2 — per-layer DAI loss over training",
            "Per-layer invariance loss L_l (Eq. 3) per epoch, one panel per arm (the paper's "
            "Figure 2).",
            lambda: _fig_dai_loss(repro),
            "no `dai` entries in any `metrics.jsonl`",
        ),
        (
            "fig_per_transform",
            "Median invariance per transformation",
            "Median invariance score per layer and transformation (each of the heavier_eval "
            "transformations alone), shared colour scale.",
            lambda: _fig_per_transform(repro, pt),
            "the evaluation summaries hold no `per_transform` medians",
        ),
        (
            "fig_accuracy",
            "Accuracy over training",
            "Test accuracy (single view, solid) and training accuracy on augmented views (dashed) "
            "per epoch; dotted: the paper's final test accuracy.",
            lambda: _fig_accuracy(repro),
            "no accuracy logged in any `metrics.jsonl`",
        ),
    ]
    results_out = []
    for name, title, caption, draw, why_not in specs:
        fig = draw()
        if fig is None:
            for suffix in (".png", ".svg"):
                (out / f"{name}{suffix}").unlink(missing_ok=True)
            results_out.append(FigureResult(name, title, caption, [], f"Not drawn: {why_not}."))
            continue
        results_out.append(FigureResult(name, title, caption, _save(fig, out, name)))
    return results_out


# --------------------------------------------------------------------------------------------
# Report documents
# --------------------------------------------------------------------------------------------


def _fmt_duration(s: Any) -> str:
    if not _finite(s):
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{int(s // 60)} min {int(round(s % 60)):02d} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def _fmt_acc(entry: Mapping[str, Any] | None) -> str:
    if not entry or not entry.get("n"):
        return "—"
    if entry["n"] > 1:
        return f"{100 * entry['mean']:.2f} ± {100 * entry['sd']:.2f} % (n={entry['n']})"
    return _pct(entry["mean"])


def _accuracy_table(repro: Reproduction, acc: Mapping[str, Any]):
    keys = list(dict.fromkeys([*_ACC_KEYS, *(k for a in acc.values() for k in a)]))
    keys = [k for k in keys if k != "last_epoch_test_acc"]
    headers = [
        "arm",
        *(_ACC_LABELS.get(k, k) for k in keys),
        "last logged epoch (metrics)",
        "paper (CCN)",
        "paper (thesis)",
    ]
    rows = []
    for arm in repro.arms:
        a = acc.get(arm, {})
        last = a.get("last_epoch_test_acc", {})
        last_txt = _fmt_acc(last)
        if last.get("n"):
            eps = sorted(set(last["epoch"].values()))
            last_txt += f" at epoch {', '.join(str(e) for e in eps)}"
        rows.append(
            [
                arm,
                *(_fmt_acc(a.get(k)) for k in keys),
                last_txt,
                _paper_pct(PAPER_ACCURACY.get(arm)),
                _paper_pct(PAPER_ACCURACY_THESIS.get(arm)),
            ]
        )
    return headers, rows


def _median_table(repro: Reproduction, inv: Mapping[str, Any]):
    arms = [a for a in repro.arms if a in inv]
    layers = _ordered_layers([*LAYERS, *(la for a in arms for la in inv[a]["layers"])])
    layers = [la for la in layers if any(la in inv[a]["layers"] for a in arms)] or list(LAYERS[:9])
    headers = ["layer"]
    for arm in arms:
        headers.append(arm)
        if arm in PAPER_MEDIANS:
            headers.append(f"paper {arm}")
    for arm in PAPER_MEDIANS:
        if arm not in arms:
            headers.append(f"paper {arm}")
    both = "dai" in arms and "baseline" in arms
    if both:
        headers.append("dai − baseline")
    rows = []
    for la in layers:
        row = [la]
        for arm in arms:
            m = _get(inv, arm, "layers", la, "median")
            row.append("—" if m is None else f"{m:.3f}")
            if arm in PAPER_MEDIANS:
                pm = _paper_median(arm, la)
                row.append("—" if pm is None else f"{pm:.2f}")
        for arm in PAPER_MEDIANS:
            if arm not in arms:
                pm = _paper_median(arm, la)
                row.append("—" if pm is None else f"{pm:.2f}")
        if both:
            d, b = (
                _get(inv, "dai", "layers", la, "median"),
                _get(inv, "baseline", "layers", la, "median"),
            )
            row.append("—" if d is None or b is None else f"{d - b:+.3f}")
        rows.append(row)
    return headers, rows


def _overhead_table(repro: Reproduction, tt: Mapping[str, Any]):
    headers = [
        "arm",
        "epochs timed",
        "mean epoch time",
        "samples / s",
        "overhead vs baseline",
        "paper",
    ]
    rows = []
    for arm in repro.arms:
        s = tt["arms"].get(arm)
        if s is None:
            rows.append([arm, "0", "—", "—", "—", "—"])
            continue
        o = tt["overhead_vs_baseline"].get(arm)
        rows.append(
            [
                arm,
                str(s["n_epochs"]),
                f"{s['mean_epoch_time_s']:.2f} s",
                "—" if s["mean_samples_per_s"] is None else f"{s['mean_samples_per_s']:.0f}",
                "reference"
                if arm == "baseline"
                else ("—" if o is None else f"{o['percent']:+.1f} %"),
                f"≈ +{100 * PAPER_OVERHEAD:.0f} %" if arm == "dai" else "—",
            ]
        )
    return headers, rows


def _runs_table(repro: Reproduction, runs: Mapping[str, Any]):
    headers = [
        "arm",
        "seed",
        "folder",
        "status",
        "epochs",
        "wall time",
        "train time",
        "device",
        "torch",
        "git commit",
    ]
    rows = []
    for arm in repro.arms:
        for seed, e in runs[arm].items():
            if not e["exists"]:
                rows.append(
                    [arm, str(seed), f"`{e['folder']}`", "missing", "—", "—", "—", "—", "—", "—"]
                )
                continue
            planned = e["epochs_planned"]
            rows.append(
                [
                    arm,
                    str(seed),
                    f"`{e['folder']}`",
                    str(e["status"]),
                    f"{e['epochs_done']}" + (f" / {planned}" if planned is not None else ""),
                    _fmt_duration(e["wall_time_s"]),
                    _fmt_duration(e["train_time_s"]),
                    str(e["device"] or "—"),
                    str(e["torch"] or "—"),
                    f"`{str(e['git_commit'])[:12]}`" if e["git_commit"] else "—",
                ]
            )
    return headers, rows


def _config_table(repro: Reproduction):
    keys = {
        ("train", "epochs"): "epochs",
        ("train", "views"): "views M",
        ("train", "batch_size"): "batch size",
        ("train", "alpha"): "α",
        ("train", "precision"): "precision",
        ("model", "name"): "model",
        ("model", "width"): "width",
    }
    present = [
        k
        for k in keys
        if any(_get(r.config, *k) is not None for a in repro.arms for r in repro.results(a))
    ]
    if not present:
        return None
    headers = ["arm", *(keys[k] for k in present)]
    rows = []
    for arm in repro.arms:
        runs = repro.results(arm)
        row = [arm]
        for k in present:
            vals = list(
                dict.fromkeys(
                    str(_get(r.config, *k)) for r in runs if _get(r.config, *k) is not None
                )
            )
            row.append(", ".join(vals) if vals else "—")
        rows.append(row)
    return headers, rows


def _blocks(repro: Reproduction, res: Mapping[str, Any], figs: Sequence[FigureResult]) -> list:
    """The report as a list of blocks, rendered to Markdown and HTML alike."""
    b: list[tuple] = []
    b.append(
        (
            "h",
            1,
            f"Data augmentation invariance — reproduction report (preset `{repro.preset or 'unknown'}`)",
        )
    )
    b.append(
        (
            "p",
            f"Generated {res['generated']} from `{repro.path}`. Every number below comes "
            "from the run files; numbers marked *paper* are the published ones (SPEC §7). "
            "Machine-readable: `results.json`.",
        )
    )
    if repro.preset_note:
        b.append(("quote", repro.preset_note))

    b.append(("h", 2, "Setup"))
    m = repro.machine
    items = [
        f"preset: `{repro.preset or 'unknown'}`; arms: {', '.join(repro.arms)}; "
        f"seeds: {', '.join(str(s) for s in repro.seeds) or '—'}"
    ]
    commit = m.get("git_commit")
    for k in ("platform", "cpu", "device", "torch", "python", "dainv"):
        if m.get(k) is not None:
            items.append(f"{k}: {m[k]}")
    items.append(f"git commit: `{commit}`" if commit else "git commit: not recorded")
    for k, v in m.items():
        if k not in ("platform", "cpu", "device", "torch", "python", "dainv", "git_commit"):
            items.append(f"{k}: {v}")
    b.append(("ul", items))
    h, r = _runs_table(repro, res["runs"])
    b.append(("table", h, r, "Runs: status, epochs logged / planned, wall time (`meta.json`)."))
    walls = []
    for arm in repro.arms:
        w = [e["wall_time_s"] for e in res["runs"][arm].values() if _finite(e.get("wall_time_s"))]
        if w:
            walls.append(f"{arm} {_fmt_duration(sum(w))} ({len(w)} run{'s' if len(w) > 1 else ''})")
    if walls:
        b.append(("p", "Wall time per arm (sum over seeds): " + "; ".join(walls) + "."))
    cfg = _config_table(repro)
    if cfg:
        b.append(("table", *cfg, "Configuration per arm (`config.yaml`)."))

    b.append(("h", 2, "Missing or unfinished"))
    if res["missing"]:
        b.append(("ul", list(res["missing"].values())))
        b.append(("p", "Statistics below use only what exists; missing parts show as —."))
    else:
        b.append(("p", "Nothing missing: every run finished all planned epochs and was evaluated."))

    b.append(("h", 2, "What this shows"))
    b.append(("ul", list(res["findings"])))

    b.append(("h", 2, "Test accuracy"))
    h, r = _accuracy_table(repro, res["accuracy"])
    b.append(
        (
            "table",
            h,
            r,
            "CIFAR-10 test set. With several seeds: mean ± sd over seeds. "
            "Light TTA: mean softmax over 10 light views. Paper: "
            f"{PAPER_EPOCHS} epochs, All-CNN-C.",
        )
    )

    b.append(("h", 2, "Training-time overhead of DAI"))
    tt = res["training_time"]
    h, r = _overhead_table(repro, tt)
    b.append(
        (
            "table",
            h,
            r,
            "Mean `epoch_time_s` over the logged epochs of all seeds, each run's "
            "first epoch left out (start-up) when it logged more than one; overhead = "
            "mean time / baseline mean time − 1.",
        )
    )
    o = tt["overhead_vs_baseline"].get("dai")
    devices = sorted(
        {
            str(r.meta.get("device"))
            for a in repro.arms
            for r in repro.results(a)
            if r.meta.get("device")
        }
    )
    if o is not None:
        b.append(
            (
                "p",
                f"DAI's training-time overhead: **{o['percent']:+.1f} %** per epoch vs the "
                f"baseline, measured on {', '.join(devices) or 'an unrecorded device'} "
                f"(paper: about +{100 * PAPER_OVERHEAD:.0f} % on one GTX 1080 Ti).",
            )
        )
    else:
        b.append(
            (
                "p",
                "DAI's overhead cannot be computed: epoch times are missing for "
                + " and ".join(a for a in ("baseline", "dai") if a not in tt["arms"])
                + ".",
            )
        )

    b.append(("h", 2, "Median invariance per layer"))
    inv = res["invariance"]
    h, r = _median_table(repro, inv)
    srcs = []
    for arm in repro.arms:
        if arm in inv:
            seeds = inv[arm]["seeds"]
            src = (
                "`eval/scores.npz`"
                if inv[arm]["source"] == "scores.npz"
                else "`eval/summary.json` (no scores file)"
            )
            srcs.append(f"{arm}: {src}, {_seed_text(seeds, ' pooled')}")
        else:
            srcs.append(f"{arm}: no invariance scores")
    b.append(
        (
            "table",
            h,
            r,
            "Median invariance score (Eq. 2). "
            + "; ".join(srcs)
            + ". Paper: read off the thesis figure (±0.02), no value for conv9.",
        )
    )

    b.append(("h", 2, "Figures"))
    for f in figs:
        b.append(("h", 3, f.title))
        if f.png is None:
            b.append(("p", f.note or "Not drawn."))
        else:
            b.append(("fig", f))
    return b


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _render_md(blocks: Sequence[tuple], repro_dir: Path) -> str:
    out: list[str] = []
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append("#" * blk[1] + " " + blk[2])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "quote":
            out.append("\n".join("> " + line for line in str(blk[1]).splitlines()))
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in blk[1]))
        elif kind == "table":
            _, headers, rows, caption = blk
            lines = [
                "| " + " | ".join(_md_cell(h) for h in headers) + " |",
                "|" + "|".join("---" for _ in headers) + "|",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            if caption:
                lines += ["", f"*{caption}*"]
            out.append("\n".join(lines))
        elif kind == "fig":
            f: FigureResult = blk[1]
            rel = f.png.relative_to(repro_dir) if f.png.is_relative_to(repro_dir) else f.png
            svg = next((p for p in f.paths if p.suffix == ".svg"), None)
            link = ""
            if svg is not None:
                srel = svg.relative_to(repro_dir) if svg.is_relative_to(repro_dir) else svg
                link = f" ([SVG]({srel.as_posix()}))"
            out.append(f"![{f.title}]({rel.as_posix()})\n\n*{f.caption}*{link}")
    return "\n\n".join(out) + "\n"


def _inline_html(s: str) -> str:
    s = html.escape(str(s), quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", s)
    return s


_NUMERIC = re.compile(r"^(—|[+\-−≈ ]*\d.*)$")

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1150px;
       margin: 2em auto; padding: 0 1.2em; color: #222; line-height: 1.45; }
h1 { font-size: 1.55em; border-bottom: 2px solid #4477AA; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .65em; }
th { background: #f0f3f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: bottom; text-align: left; font-size: .88em; color: #555; padding-top: .3em; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
blockquote { border-left: 4px solid #ccbb44; margin: 1em 0; padding: .3em 1em; background: #fbfaf0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #e3e3e3; }
figcaption { font-size: .9em; color: #444; }
""".strip()


def _render_html(blocks: Sequence[tuple], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_CSS}\n</style></head><body>",
    ]
    for blk in blocks:
        kind = blk[0]
        if kind == "h":
            out.append(f"<h{blk[1]}>{_inline_html(blk[2])}</h{blk[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(blk[1])}</p>")
        elif kind == "quote":
            out.append(f"<blockquote>{_inline_html(blk[1])}</blockquote>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in blk[1]) + "</ul>")
        elif kind == "table":
            _, headers, rows, caption = blk
            t = ["<table>"]
            if caption:
                t.append(f"<caption>{_inline_html(caption)}</caption>")
            t.append(
                "<thead><tr>"
                + "".join(f"<th>{_inline_html(h)}</th>" for h in headers)
                + "</tr></thead><tbody>"
            )
            for row in rows:
                cells = []
                for i, c in enumerate(row):
                    cls = ' class="num"' if i > 0 and _NUMERIC.match(str(c)) else ""
                    cells.append(f"<td{cls}>{_inline_html(c)}</td>")
                t.append("<tr>" + "".join(cells) + "</tr>")
            t.append("</tbody></table>")
            out.append("\n".join(t))
        elif kind == "fig":
            f: FigureResult = blk[1]
            data = base64.b64encode(f.png.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline_html(f.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def build_report(repro_dir: str | Path) -> Path:
    """Read the reproduction folder and write ``figures/``, ``results.json``, ``report.md`` and
    ``report.html`` into it. Returns the path of ``report.md``."""
    repro = load_reproduction(repro_dir)
    res = collect_results(repro)
    figs = make_figures(repro, repro.path / "figures", res)
    res["figures"] = {f.name: {"files": [p.name for p in f.paths], "note": f.note} for f in figs}
    (repro.path / "results.json").write_text(
        json.dumps(_jsonable(res), indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    blocks = _blocks(repro, res, figs)
    md_path = repro.path / "report.md"
    md_path.write_text(_render_md(blocks, repro.path), encoding="utf-8")
    (repro.path / "report.html").write_text(
        _render_html(blocks, f"DAI reproduction report — {repro.preset or 'unknown'}"),
        encoding="utf-8",
    )
    return md_path


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m dainv.report", description=build_report.__doc__)
    p.add_argument("repro_dir", help="reproduction folder (holds reproduce.json)")
    args = p.parse_args(argv)
    try:
        path = build_report(args.repro_dir)
    except (RunError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(path)
    print(path.with_suffix(".html"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
