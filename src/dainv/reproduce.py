"""``dainv reproduce``: train the arms from the same initial weights, evaluate each, report.

A reproduction folder holds one run folder per (arm, seed) — ``baseline-s0``, ``dai-s0``,
``control-s0`` … — and ``reproduce.json`` saying what it is. Running the same command again
skips finished arms, resumes an interrupted one and rebuilds the report.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dainv import runio
from dainv.config import ARMS, load_config, load_preset
from dainv.data import load_dataset
from dainv.errors import ConfigError, RunError

__all__ = ["reproduce", "default_arms"]


def default_arms(preset: str) -> list[str]:
    return list(load_preset(preset).get("arms", list(ARMS)))


def reproduce(
    preset: str,
    out: Path | None = None,
    arms: list[str] | None = None,
    seeds: int = 1,
    overrides: list[str] = (),
    data_root: str | None = None,
    device: str | None = None,
    per_transform: bool | None = None,
    quiet: bool = False,
) -> Path:
    """Run (or continue) a reproduction; returns the path of its ``report.md``."""
    from dainv.evaluate import evaluate
    from dainv.report import build_report
    from dainv.train import train

    raw = load_preset(preset)
    arms = list(arms) if arms else default_arms(preset)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ConfigError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    extra = list(overrides)
    if data_root:
        extra.append(f"data.root={data_root}")
    if device:
        extra.append(f"device={device}")
    # Validate every arm's config before any work starts.
    cfgs = {
        (arm, s): load_config(preset, overrides=[*extra, f"seed={s}", f"name={preset}-{arm}-s{s}"], arm=arm)
        for s in range(seeds)
        for arm in arms
    }
    out = Path(out) if out is not None else Path("reproductions") / preset
    index_path = out / "reproduce.json"
    if index_path.exists():
        index = runio.read_json(index_path)
        if index.get("preset") != preset:
            raise RunError(
                f"{out} holds a reproduction of preset '{index.get('preset')}', not '{preset}'; "
                "choose another --out"
            )
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out} exists, is not empty and is not a dainv reproduction; choose another --out")
    else:
        index = {"preset": preset, "created": runio.now()}
    first = next(iter(cfgs.values()))
    runs: dict[str, dict[str, str]] = index.get("runs", {})
    for (arm, s) in cfgs:
        runs.setdefault(arm, {})[str(s)] = f"{arm}-s{s}"
    all_arms = list(dict.fromkeys([*index.get("arms", []), *arms]))
    index.update(
        preset=preset,
        preset_note=raw.get("description", ""),
        arms=all_arms,
        seeds=sorted({int(s) for r in runs.values() for s in r}),
        runs=runs,
        overrides=extra,
        machine=runio.environment(first.device if first.device != "auto" else None),
    )
    runio.write_json(index_path, index)

    data = load_dataset(first.data.dataset, first.data.root)
    n_total = len(cfgs)
    for i, ((arm, s), cfg) in enumerate(cfgs.items(), 1):
        run_dir = out / f"{arm}-s{s}"
        head = f"[{i}/{n_total}] {arm} (seed {s})"
        if runio.is_run_dir(run_dir):
            status = runio.read_json(run_dir / "meta.json").get("status")
            if status == "finished":
                _say(f"{head}: finished earlier, skipping training")
            else:
                _say(f"{head}: resuming the interrupted run in {run_dir}")
                train(None, run_dir, resume=True, quiet=quiet, data=data)
        else:
            _say(f"{head}: training into {run_dir}")
            train(cfg, run_dir, quiet=quiet, data=data)
        if not (run_dir / "eval" / "summary.json").exists():
            _say(f"{head}: evaluating")
            evaluate(run_dir, data=data, device=device, per_transform=per_transform, quiet=quiet)
    report = build_report(out)
    _say(f"report: {report}")
    return report


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
