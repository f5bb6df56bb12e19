"""Reading run folders and reproduction folders (run folders given one by one are grouped the same way, arms
inferred from their configs). What cannot be read is recorded in ``problems``, never guessed."""

from __future__ import annotations

import dataclasses
import functools
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

from dainv import runio
from dainv.config import ARMS, differences, flat_items, preset_variants
from dainv.errors import ConfigError, DataError, RunError
from dainv.evalfolders import stale_reason
from dainv.report.paper import PAPER_DATA, PAPER_MODEL


def get(d: Mapping[str, Any] | None, *keys: str) -> Any:
    """``d[k1][k2]…`` or None when any level is missing or not a mapping."""
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def order_layers(names: Iterable[str], reference: Sequence[str] = ()) -> list[str]:
    """Layer names in the order of ``reference`` (e.g. a summary's layer list), then as first seen."""
    names = list(dict.fromkeys(names))
    known = [la for la in dict.fromkeys(reference) if la in names]
    return known + [n for n in names if n not in known]


@dataclass
class EvalResult:
    """One evaluation folder: ``eval/`` (final) or ``eval-epoch-NNNN/`` (a kept checkpoint)."""

    path: Path
    summary: dict[str, Any] | None = None
    scores: dict[str, np.ndarray] | None = None
    folder_epoch: int | None = None

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        ck = get(self.summary, "checkpoint")
        return ck if isinstance(ck, dict) else None

    @property
    def epoch(self) -> int | None:
        ep = get(self.checkpoint, "epoch")
        return int(ep) if finite(ep) else self.folder_epoch

    @property
    def layers(self) -> list[str]:
        """Layer names in network order: the summary's list, then the scores' keys."""
        listed = get(self.summary, "invariance", "layers")
        listed = [str(x) for x in listed] if isinstance(listed, list) else []
        return order_layers([*listed, *(self.scores or {})], listed)


@dataclass
class RunResult:
    """Everything one run folder holds; missing parts are empty or None."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    final_eval: EvalResult | None = None
    epoch_evals: dict[int, EvalResult] = field(default_factory=dict)
    # ``eval+SCHEME/``, ``eval-epoch-NNNN+SCHEME/``: scheme → (final evaluation, {epoch: kept one})
    scheme_evals: dict[str, tuple[EvalResult | None, dict[int, EvalResult]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    arm: str | None = None
    seed: int | str | None = None

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.final_eval.summary if self.final_eval else None

    @property
    def scores(self) -> dict[str, np.ndarray] | None:
        return self.final_eval.scores if self.final_eval else None

    @property
    def status(self) -> str:
        return str(self.meta.get("status", "unknown")) if self.meta else "unknown"

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def evaluated(self) -> bool:
        return self.summary is not None

    @property
    def epochs_done(self) -> int:
        return max((int(m["epoch"]) for m in self.metrics), default=0)

    @property
    def epochs_planned(self) -> int | None:
        epochs = get(self.config, "train", "epochs")
        return int(epochs) if finite(epochs) else None

    @functools.cached_property
    def stale_reason(self) -> str | None:
        """Why the final evaluation is not the run's own of its final checkpoint (None: it is); cached."""
        return stale_reason(self.path, self.final_eval.path, self.summary) if self.summary is not None else None


@dataclass
class Reproduction:
    """Runs grouped by arm and seed; ``runs[arm][seed]`` is None for a named run folder that does
    not exist; ``folders[arm][seed]`` is its folder as shown."""

    path: Path
    manifest: dict[str, Any]
    preset: str | None
    preset_note: str | None
    arms: list[str]
    seeds: list[int | str]
    runs: dict[str, dict[int | str, RunResult | None]]
    folders: dict[str, dict[int | str, str]]
    adhoc: bool = False

    def results(self, arm: str) -> list[RunResult]:
        return [r for r in self.runs.get(arm, {}).values() if r is not None]

    def all_results(self) -> list[RunResult]:
        return [r for a in self.arms for r in self.results(a)]

    @property
    def machine(self) -> dict[str, Any]:
        m = self.manifest.get("machine")
        return m if isinstance(m, dict) else {}

    def _used(self, section: str, key: str, default: str) -> list[str]:
        """The runs' values of a setting (a missing one: its default, the paper's), each once."""
        return list(dict.fromkeys(str(get(r.config, section, key) or default) for r in self.all_results()))

    @property
    def paper(self) -> bool:
        """Whether every run trained the model and data the paper's numbers are of: shown only then."""
        return (set(self._used("model", "name", PAPER_MODEL)) <= {PAPER_MODEL}
                and set(self._used("data", "dataset", PAPER_DATA)) <= {PAPER_DATA})

    @property
    def trained(self) -> str:
        """``wrn-28-10 on cifar10``; an ``npz:PATH`` data set by its file name (no machine's paths)."""
        models, data = self._used("model", "name", PAPER_MODEL), self._used("data", "dataset", PAPER_DATA)
        data = [f"{kind}:{Path(path).name}" if path else kind for kind, _, path in (d.partition(":") for d in data)]
        return f"{', '.join(models) or 'no runs'} on {', '.join(data) or 'no data'}"

    @property
    def setting(self) -> str:
        """For titles: ``preset quick``, else :attr:`trained`."""
        return f"preset {self.preset}" if self.preset else self.trained


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return runio.read_json(path)
    except (RunError, OSError) as err:
        problems.append(f"`{path.parent.name}/{path.name}` could not be read ({err})")
        return None


def _read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """``metrics.jsonl``'s complete lines (a run still writing may leave a partial last line)."""
    rows = runio.read_metrics(path, partial=True)
    good = [row for row in rows if isinstance(row, dict) and finite(row.get("epoch"))]
    if len(good) < len(rows):
        problems.append(f"{len(rows) - len(good)} line(s) of `metrics.jsonl` are not complete epoch records "
                        "(skipped; a run still writing may leave a partial last line)")
    by_epoch = {int(row["epoch"]): row for row in good}  # a resumed run may log an epoch twice: the later wins
    return [by_epoch[e] for e in sorted(by_epoch)]


def _read_eval(folder: Path, problems: list[str], epoch: int | None = None) -> EvalResult | None:
    summary = _read_json(folder / "summary.json", problems)
    if not isinstance(summary, dict):
        return None
    scores = None
    if (folder / "scores.npz").is_file():
        try:
            with np.load(folder / "scores.npz", allow_pickle=False) as z:
                scores = {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            problems.append(f"`{folder.name}/scores.npz` could not be read ({err})")
    return EvalResult(folder, summary, scores, epoch)


def _read_config(path: Path, problems: list[str]) -> dict[str, Any]:
    """The run's config; ``{}`` and a problem saying why when unreadable, empty or not a mapping."""
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problems.append(f"`config.yaml` could not be read ({' '.join(str(err).split())[:200]}); its settings are unknown")
        return {}
    if not isinstance(loaded, dict):
        what = "is empty" if loaded is None else f"holds a {type(loaded).__name__}, not a mapping of settings"
        problems.append(f"`config.yaml` {what}; its settings are unknown to the report (restore the file to see them)")
        return {}
    return loaded


def _epoch_evals(path: Path, tail: str, problems: list[str]) -> dict[int, EvalResult]:
    out = {}
    for sub in sorted(path.glob(f"eval-epoch-*{tail}")):
        m = re.fullmatch(r"eval-epoch-(\d+)", sub.name[: len(sub.name) - len(tail)])
        if m and sub.is_dir() and (ev := _read_eval(sub, problems, int(m.group(1)))):
            out[ev.epoch] = ev  # the checkpoint's epoch, else the folder's
    return dict(sorted(out.items()))


def load_run(run_dir: str | Path, arm: str | None = None, seed: int | str | None = None) -> RunResult:
    """Read a run folder; only a folder that does not exist raises."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run folder {path} does not exist (or is not a folder)")
    problems: list[str] = []
    config = _read_config(path / "config.yaml", problems)
    meta = _read_json(path / "meta.json", problems)
    epoch_evals = _epoch_evals(path, "", problems)
    schemes = {sub.name[len("eval+") :]: (_read_eval(sub, problems), _epoch_evals(path, sub.name[4:], problems))
               for sub in sorted(path.glob("eval+*"))}  # fmt: skip
    return RunResult(path, config, meta if isinstance(meta, dict) else {}, _read_metrics(path / "metrics.jsonl", problems),
                     _read_eval(path / "eval", problems), epoch_evals, schemes, problems,
                     arm if arm is not None else config.get("name"), seed if seed is not None else config.get("seed"))


def under_scheme(repro: Reproduction, scheme: str) -> Reproduction:
    """The reproduction as if its evaluations were those under another scheme (``eval+SCHEME``)."""
    def swap(r: RunResult | None) -> RunResult | None:
        final, kept = r.scheme_evals.get(scheme, (None, {})) if r else (None, {})
        return dataclasses.replace(r, final_eval=final, epoch_evals=kept) if r else None

    return dataclasses.replace(repro, runs={a: {s: swap(r) for s, r in by.items()} for a, by in repro.runs.items()})


def seed_key(s: Any) -> int | str:
    return s if isinstance(s, int) else int(s) if re.fullmatch(r"-?\d+", str(s)) else str(s)


def load_reproduction(repro_dir: str | Path) -> Reproduction:
    """Read ``reproduce.json`` and the run folders it names; without it, every ``ARM-sSEED`` run folder."""
    path = Path(repro_dir)
    if not path.is_dir():
        raise RunError(f"reproduction folder {path} does not exist (or is not a folder)")
    problems: list[str] = []
    manifest = _read_json(path / "reproduce.json", problems)
    if problems:
        raise DataError(f"{path / 'reproduce.json'}: {problems[0]}; fix or delete it (without it the run "
                        "folders ARM-sSEED are found by name)")
    folders: dict[str, dict[int | str, str]] = {}
    if isinstance(manifest, dict) and isinstance(manifest.get("runs"), dict):
        folders = {str(arm): {seed_key(s): str(f) for s, f in by.items()}
                   for arm, by in manifest["runs"].items() if isinstance(by, dict)}  # fmt: skip
    else:
        for sub in sorted(path.iterdir()):
            m = re.fullmatch(r"(.+)-s(\d+)", sub.name)
            if m and sub.is_dir() and any((sub / f).exists() for f in ("config.yaml", "meta.json", "metrics.jsonl")):
                folders.setdefault(m.group(1), {})[int(m.group(2))] = sub.name
        if not folders:
            raise DataError(f"{path} holds neither reproduce.json nor run folders named ARM-sSEED; "
                            "point the report at the folder `dainv reproduce` wrote, or at run folders")
    manifest = manifest if isinstance(manifest, dict) else {}
    arms = _order_arms([str(a) for a in manifest.get("arms") or []] + list(folders))
    seeds: list[int | str] = [seed_key(s) for s in manifest.get("seeds", []) or []]
    for by_seed in folders.values():
        seeds += [s for s in by_seed if s not in seeds]
    runs: dict[str, dict[int | str, RunResult | None]] = {}
    for arm in arms:
        by_seed = folders.setdefault(arm, {})
        runs[arm] = {s: load_run(p, arm, s) if (p := path / by_seed.setdefault(s, f"{arm}-s{s}")).is_dir() else None
                     for s in seeds}  # fmt: skip
    preset = manifest.get("preset")
    if preset is None:
        preset = next((r.config["preset"] for a in arms for r in runs[a].values() if r and r.config.get("preset")), None)
    note = manifest.get("preset_note")
    return Reproduction(path, manifest, str(preset) if preset is not None else None, str(note) if note else None,
                        arms, seeds, runs, folders)


def _order_arms(arms: Iterable[str]) -> list[str]:
    arms = list(dict.fromkeys(arms))
    return [a for a in ARMS if a in arms] + [a for a in arms if a not in ARMS]


def settings_check(repro: Reproduction) -> dict[str, Any]:
    """``{"differ": {key: {arm: [values]}}, "undeclared": [keys]}``: the settings in which runs differ (by
    :func:`dainv.config.differences`, except the arm's views and α) and those no declared variant explains."""
    first = next((r.config for r in repro.all_results()), {})
    keys = {k for r in repro.all_results() for k, _, _ in differences(r.config, first)} - {"seed", "preset", "train.views", "train.alpha"}
    values: dict[str, dict[str, list[Any]]] = {}
    for arm in repro.arms:
        for r in repro.results(arm):
            for k, v in flat_items(r.config).items():
                if k in keys and v not in (vals := values.setdefault(k, {}).setdefault(arm, [])):
                    vals.append(v)
    differ = {k: by for k, by in values.items()
              if len({json.dumps(v, sort_keys=True, default=str) for vs in by.values() for v in vs}) > 1}  # fmt: skip
    try:  # the keys each variant of the preset declares (``variants: {name: {arm, set}}``)
        declared = {name: set(v.get("set") or {}) for name, v in preset_variants(repro.preset).items()} if repro.preset else {}
    except (ConfigError, OSError):
        declared = {}
    ref = next((a for a in repro.arms if a not in declared and repro.results(a)), None)
    undeclared = [k for k, by in differ.items()
                  if any(len(vs) > 1 or (ref in by and vs != by[ref] and k not in declared.get(a, ()))
                         for a, vs in by.items())]  # fmt: skip
    return {"differ": differ, "undeclared": undeclared}


def infer_arm(config: Mapping[str, Any], fallback: str) -> str:
    """The entry of :data:`dainv.config.ARMS` whose views and α the run used, else its name."""
    views, alpha = get(config, "train", "views"), get(config, "train", "alpha")
    for arm, spec in ARMS.items():
        if finite(views) and finite(alpha) and views == spec["views"] and alpha == spec["alpha"]:
            return arm
    return str(config.get("name") or fallback)


def load_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Reproduction:
    """Group run folders given one by one (arms by :func:`infer_arm`; the same arm and seed: by folder name)."""
    loaded = []
    for d in run_dirs:
        if not runio.is_run_dir(p := Path(d)):
            raise RunError(f"{p} is not a dainv run folder (no config.yaml and meta.json)")
        run = load_run(p)
        run.arm, run.seed = infer_arm(run.config, p.name), seed_key(run.config.get("seed", 0))
        loaded.append(run)
    taken = [(r.arm, r.seed) for r in loaded]
    runs: dict[str, dict[int | str, RunResult | None]] = {}
    folders: dict[str, dict[int | str, str]] = {}
    for run in loaded:
        if taken.count((run.arm, run.seed)) > 1:
            run.arm = f"{run.arm} ({run.path.name})"
        runs.setdefault(run.arm, {})[run.seed] = run
        folders.setdefault(run.arm, {})[run.seed] = run.path.name  # its name, not a machine's path
    arms = _order_arms(runs)
    presets = {r.config.get("preset") for r in loaded}
    preset = presets.pop() if len(presets) == 1 else None
    return Reproduction(Path(out_dir), {}, str(preset) if preset else None, None, arms,
                        list(dict.fromkeys(r.seed for r in loaded)), {a: runs[a] for a in arms}, folders, adhoc=True)
