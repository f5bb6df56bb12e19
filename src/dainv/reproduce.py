"""``dainv reproduce``: train the arms from the same initial weights, evaluate each, report. The same command
again continues a reproduction folder (docs/reliability.md): finished arms skipped, interrupted ones resumed,
stale evaluations redone, the report rebuilt; other settings are refused unless ``force``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dainv import runio
from dainv.augment import SCHEMES
from dainv.config import (
    ARMS,
    RunConfig,
    differences,
    dump_yaml,
    from_dict,
    load_config,
    load_preset,
    model_kwargs,
    preset_variants,
    read_run_config,
    to_dict,
)
from dainv.data import load_configured
from dainv.errors import ConfigError, RunError, TimeLimitReached
from dainv.evalfolders import eval_status, kept_checkpoints, stale_reason
from dainv.evaluate import evaluate, evaluate_kept
from dainv.measure import Protocol
from dainv.models import build_model, resolve_layers
from dainv.runtime import resolve_device, resolve_precision
from dainv.train import train

__all__ = ["reproduce", "config_diff"]


def _layer_names(cfg: RunConfig) -> list[str]:
    """The layers a config taps (``auto`` resolved on the meta device: no memory, no compute)."""
    net = build_model(cfg.model.name, 10, 3, cfg.train.layers, shapes_only=True, **model_kwargs(cfg.model))
    return resolve_layers(net, cfg.train.layers)


def config_diff(cfg: RunConfig, run_dir: Path) -> list[str]:
    """``key = saved there, asked here`` for each result-changing setting that differs."""
    try:
        saved = to_dict(read_run_config(Path(run_dir) / "config.yaml"))
    except ConfigError as e:
        return [f"config.yaml invalid ({e})"]
    mine = to_dict(cfg)  # as the trainer writes it to config.yaml: ``precision: auto`` resolved
    mine["train"]["precision"] = resolve_precision(cfg.train.precision, resolve_device(cfg.device))
    if "auto" in (saved["train"]["layers"], mine["train"]["layers"]):  # compare the names it means
        saved["train"]["layers"], mine["train"]["layers"] = _layer_names(from_dict(saved)), _layer_names(cfg)
    return [f"{k} = {t!r} there, {m!r} now" for k, t, m in differences(mine, saved)]


@dataclass
class _Job:
    arm: str
    seed: int
    cfg: RunConfig
    run_dir: Path
    action: str  # a key of _SAY

    @property
    def name(self) -> str:
        return f"{self.arm}-s{self.seed}"

    @property
    def head(self) -> str:
        return f"{self.arm} (seed {self.seed})"


_SAY = {
    "skip": "finished earlier, skipping training",
    "resume": "resuming the interrupted run in {d}",
    "train": "training into {d}",
    "restart": "{d} was left half-created by an interrupted start (config.yaml without meta.json); starting it again",
    "retrain": "settings differ from the run in {d}; training it again (--force)",
    "damaged": "{d}/meta.json is damaged; training the run again from scratch (--force)",
}
#: Actions that start the run again from scratch over what its folder holds.
_FRESH = ("restart", "retrain", "damaged")


def _load_index(out: Path, preset: str, force: bool) -> dict[str, Any]:
    """``reproduce.json`` of ``out`` (new for a new folder); refuses a folder that holds something
    else, or a damaged record unless ``force`` (then it is rebuilt)."""
    if out.exists() and not out.is_dir():
        raise RunError(
            f"--out {out} is a file, not a folder; give the path of a new folder (it is created) "
            "or of an earlier reproduction of this preset"
        )
    path = out / "reproduce.json"
    if path.exists():
        try:
            index = runio.read_json(path)
        except RunError:
            index = None
        ok = isinstance(index, dict) and isinstance(index.get("preset"), str)
        runs = index.get("runs", {}) if ok else None
        ok = ok and isinstance(runs, dict) and all(isinstance(v, dict) for v in runs.values())
        ok = ok and isinstance(index.get("arms", []), list)
        if not ok:
            if force:
                _say(f"{path} is damaged: rebuilding it from the arm folders (--force)")
                return {"preset": preset, "created": runio.now(), "rebuilt": runio.now()}
            raise RunError(
                f"{path} is damaged (not a reproduction record); run the same command with --force "
                "to rebuild it from the arm folders there (trained runs are kept and reused), or "
                "choose another --out"
            )
        if index["preset"] != preset:
            raise RunError(
                f"{out} holds a reproduction of preset '{index['preset']}', not '{preset}'; "
                "choose another --out"
            )
        return index
    if out.exists() and any(out.iterdir()) and not force:
        raise RunError(
            f"{out} exists, is not empty and is not a dainv reproduction; choose another --out "
            "(or --force to use it: arm folders there are reused or retrained)"
        )
    return {"preset": preset, "created": runio.now()}


def _plan(cfgs: dict[tuple[str, int], RunConfig], out: Path, force: bool) -> list[_Job]:
    """What each (arm, seed) needs; refuses settings that differ from a run already there."""
    jobs, differ = [], []
    for (arm, s), cfg in cfgs.items():
        run_dir = out / f"{arm}-s{s}"
        status = None
        if runio.is_run_dir(run_dir):
            try:  # a damaged meta.json is refused with read_meta's message, or retrained (force)
                status = str(runio.read_meta(run_dir).get("status"))
            except RunError:
                if not force:
                    raise
        if runio.incomplete_run(run_dir):
            action = "restart"
        elif not runio.is_run_dir(run_dir):
            action = "train"
        elif status is None:
            action = "damaged"
        elif diff := config_diff(cfg, run_dir):
            differ.append(f"{arm}-s{s}: " + "; ".join(diff[:6]))
            action = "retrain"
        else:
            action = "skip" if status == "finished" else "resume"
        jobs.append(_Job(arm, s, cfg, run_dir, action))
    if differ and not force:
        raise RunError(
            f"{out} already holds runs made with other settings — " + " | ".join(differ) + ". "
            "Run the command with the settings it was made with (see 'overrides' in "
            f"{out / 'reproduce.json'}), choose another --out, or add --force to retrain the "
            "arms whose settings differ (their results are replaced)"
        )
    return jobs


def _spawn(job: _Job, out: Path, deadline: float | None) -> tuple[subprocess.Popen, Path]:
    """``dainv train`` for ``job`` as a process of its own; returns it and its log file."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cfg_file, log = logs / f"{job.name}.config.yaml", logs / f"{job.name}.log"
    runio.atomic_write_text(cfg_file, dump_yaml(job.cfg))
    cmd = [sys.executable, "-m", "dainv", "train", "--quiet"]
    if deadline is not None:  # the time left, counted again from the child's own start
        cmd += ["--time-limit", f"{max(deadline - time.monotonic(), 0.001):.3f}"]
    if job.action == "resume":
        cmd += ["--resume", str(job.run_dir)]
    else:
        # The file holds the whole config; --arm (which train requires) sets views and α after it: set again.
        t = job.cfg.train
        arm = next((a for a, v in ARMS.items() if v == {"views": t.views, "alpha": t.alpha}), "dai")
        cmd += ["--config", str(cfg_file), "--arm", arm, "--set", f"train.views={t.views}", "--set",
                f"train.alpha={t.alpha!r}", "--set", f"name={job.cfg.name}", "--out", str(job.run_dir)]  # fmt: skip
        cmd += ["--force"] if job.action in _FRESH else []
    # The processes keep the thread count of a sequential run (set OMP_NUM_THREADS to share the
    # cores out): another count changes the float reductions, and the weights must be bitwise the same.
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(x for x in (src, env.get("PYTHONPATH")) if x)
    with open(log, "ab") as f:
        # Its own session: a terminal's Ctrl-C reaches only us, and we forward one SIGINT (two stop it unsaved).
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, log


def _collect_log(job: _Job, log: Path) -> None:
    """Append the process's log to ``RUN/train.log`` (the run folder exists once it started)."""
    if job.run_dir.is_dir():
        with open(job.run_dir / "train.log", "ab") as f:
            f.write(log.read_bytes())
        log.unlink()
        (log.parent / f"{job.name}.config.yaml").unlink(missing_ok=True)


def _train_parallel(jobs: list[_Job], out: Path, parallel: int, deadline: float | None) -> None:
    """Train as up to ``parallel`` concurrent ``dainv train`` processes. A stop (here, or exit 130) stops all (each
    saves) and raises :class:`KeyboardInterrupt`; a time limit (exit 75): :class:`TimeLimitReached` once all end."""
    todo = [j for j in jobs if j.action != "skip"]
    for j in jobs:
        if j.action == "skip":
            _say(f"{j.head}: " + _SAY["skip"])
    running: dict[str, tuple[_Job, subprocess.Popen, Path]] = {}
    failed, timed = [], []
    try:
        with _sigterm_as_interrupt():
            while todo or running:
                while todo and len(running) < parallel and not timed:
                    job = todo.pop(0)
                    proc, log = _spawn(job, out, deadline)
                    running[job.name] = (job, proc, log)
                    _say(f"{job.head}: " + _SAY[job.action].format(d=job.run_dir) + f" (process {proc.pid}, log {log})")
                time.sleep(0.2)
                failed += _reap(running, timed)
                if timed and not running:
                    break
    except KeyboardInterrupt:
        for _, proc, _ in running.values():
            proc.send_signal(signal.SIGINT)  # each saves its checkpoint and exits
        for job, proc, log in running.values():
            proc.wait()
            _collect_log(job, log)
        raise
    with contextlib.suppress(OSError):
        (out / "logs").rmdir()  # empty once every log went to its run's train.log
    if failed:
        raise RunError(
            "training failed for " + "; ".join(failed) + ". Each run's log is its train.log; run the "
            "same command again to resume"
        )
    if timed:
        raise TimeLimitReached(
            f"stopped before the time limit: {', '.join(timed)} saved a resumable checkpoint"
            + (f", {', '.join(j.name for j in todo)} not started" if todo else "")
            + "; nothing was evaluated. Run the same command again to go on (exit status 75)"
        )


def _reap(running: dict[str, tuple[_Job, subprocess.Popen, Path]], timed: list[str]) -> list[str]:
    """Collect the processes that ended: returns the failed ones, adds those stopped by their time
    limit to ``timed``, raises :class:`KeyboardInterrupt` for one stopped by a signal."""
    failed = []
    for name, (job, proc, log) in list(running.items()):
        if proc.poll() is None:
            continue
        del running[name]
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        _collect_log(job, log)
        if proc.returncode == 130:
            _say(f"{job.head}: training was stopped by a signal; stopping the reproduction")
            raise KeyboardInterrupt
        if proc.returncode == TimeLimitReached.exit_code:
            _say(f"{job.head}: stopped before the time limit, checkpoint saved")
            timed.append(name)
        elif proc.returncode != 0:
            failed.append(f"{name} (exit {proc.returncode}: {' / '.join(tail)})")
        else:
            _say(f"{job.head}: training finished")
    return failed


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM acts as Ctrl-C while training processes run: they stop and save, not left running."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def eval_schemes(preset: str) -> list[str]:
    """The preset's ``eval_schemes``: schemes every arm is also evaluated under (``RUN/eval+SCHEME/``)."""
    names = load_preset(preset).get("eval_schemes") or []
    bad = [s for s in names if s not in SCHEMES] if isinstance(names, list) else names
    if bad:
        raise ConfigError(f"eval_schemes in preset '{preset}': {bad!r} — each must be one of {', '.join(SCHEMES)}")
    return list(names)


def _why_again(run_dir: Path, folder: Path, per_transform: bool | None) -> str | None:
    """Why ``folder`` must be evaluated (again): ``""`` if missing, the reason if stale, ``None`` if current."""
    status = eval_status(run_dir, folder)
    if status == "missing":
        return ""
    if status == "stale":
        return stale_reason(run_dir, folder) or f"`{folder.name}/` is incomplete or damaged"
    if per_transform and "per_transform" not in runio.read_json(folder / "summary.json"):
        return "it has no per-transformation scores"
    return None


def _evaluate_all(jobs: list[_Job], data: Any, *, device: str | None, per_transform: bool | None, quiet: bool,
                  schemes: list[str] = (), deadline: float | None = None) -> None:  # fmt: skip
    longest = 0.0

    def timed(fn: Any, *args: Any, **kw: Any) -> Any:
        """``fn(...)``, started only while the time left exceeds the longest evaluation so far."""
        nonlocal longest
        if deadline is not None and time.monotonic() + 1.5 * longest >= deadline:
            raise TimeLimitReached(
                "stopped before the time limit: training is complete, evaluations remain; run "
                "the same command again to evaluate and write the report (exit status 75)"
            )
        t0 = time.monotonic()
        out = fn(*args, **kw)
        longest = max(longest, time.monotonic() - t0)
        return out

    for job in jobs:
        own = Protocol.from_config(job.cfg).scheme
        for scheme in [None, *(s for s in schemes if s != own)]:  # the preset's other schemes too
            tail, under = (f"+{scheme}", f" under {scheme}") if scheme else ("", "")
            why = _why_again(job.run_dir, job.run_dir / f"eval{tail}", per_transform if not scheme else None)
            if why is not None:
                why = why.removesuffix("; re-run `dainv evaluate`")  # the advice to a user: reproduce does it now
                _say(f"{job.head}: evaluating{under}" + (f" (the evaluation there is stale: {why}; it is done again)" if why else ""))
                timed(evaluate, job.run_dir, data=data, device=device,
                      per_transform=per_transform if not scheme else None, quiet=quiet, scheme=scheme)  # fmt: skip
            if kept_checkpoints(job.run_dir):
                for r in timed(evaluate_kept, job.run_dir, scheme=scheme, data=data, device=device, quiet=quiet):
                    _say(f"{job.head}: evaluated the kept checkpoint of epoch {r['checkpoint']['epoch']}{under}")


def reproduce(
    preset: str, out: Path | None = None, *, arms: list[str] | None = None, seeds: int = 1,
    overrides: list[str] = (), data_root: str | None = None, device: str | None = None,
    per_transform: bool | None = None, quiet: bool = False, force: bool = False, parallel: int = 1,
    deadline: float | None = None, download: bool | None = None,
) -> Path:  # fmt: skip
    """Run (or continue) a reproduction of ``preset`` into ``out`` (default ``reproductions/PRESET``) over seeds
    ``0..seeds-1``; returns its ``report.md``. ``force``: retrain arms whose settings differ, rebuild a damaged
    ``reproduce.json``. ``deadline`` (``--time-limit``, :func:`time.monotonic`): training stops before it
    resumably, an evaluation starts only while the time left exceeds the longest so far."""
    from dainv.report import build_report  # here: tests replace dainv.report.build_report
    # Everything is checked before any work starts. An arm is one of ARMS or a preset's variant.
    arms = list(arms) if arms else list(load_preset(preset).get("arms", list(ARMS)))
    known = [*ARMS, *preset_variants(preset)]
    if unknown := [a for a in arms if a not in known]:
        raise ConfigError(f"unknown arm(s) {unknown}; choose from {', '.join(known)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    schemes = eval_schemes(preset)
    extra = [*overrides, *([f"data.root={data_root}"] if data_root else []), *([f"device={device}"] if device else [])]
    cfgs = {(arm, s): load_config(preset, overrides=[*extra, f"seed={s}", f"name={preset}-{arm}-s{s}"], arm=arm)
            for s in range(seeds) for arm in arms}  # fmt: skip
    out = Path(out) if out is not None else Path("reproductions") / preset
    index = _load_index(out, preset, force)
    jobs = _plan(cfgs, out, force)
    together = parallel > 1 and sum(j.action != "skip" for j in jobs) > 1
    _write_index(out, index, jobs, arms=arms, extra=extra, together=together)
    data = load_configured(jobs[0].cfg.data, download=download)
    if together:
        _train_parallel(jobs, out, parallel, deadline)
    else:  # in this process, one after another
        for i, job in enumerate(jobs, 1):
            _say(f"[{i}/{len(jobs)}] {job.head}: " + _SAY[job.action].format(d=job.run_dir))
            if job.action == "resume":
                train(None, job.run_dir, resume=True, quiet=quiet, data=data, deadline=deadline)
            elif job.action != "skip":
                train(job.cfg, job.run_dir, force=job.action in _FRESH, quiet=quiet, data=data, deadline=deadline)
    _evaluate_all(jobs, data, device=device, per_transform=per_transform, quiet=quiet,
                  schemes=schemes, deadline=deadline)  # fmt: skip
    return build_report(out)  # the CLI prints its headline and both paths


def _write_index(out: Path, index: dict[str, Any], jobs: list[_Job], *, arms: list[str], extra: list[str],
                 together: bool) -> None:  # fmt: skip
    runs: dict[str, dict[str, str]] = index.get("runs", {})
    for j in jobs:
        runs.setdefault(j.arm, {})[str(j.seed)] = j.name
    if together:  # epoch times of arms trained side by side include each other's load: the report says so
        index["trained_concurrently"] = sorted({*index.get("trained_concurrently", []),
                                                *(j.name for j in jobs if j.action != "skip")})  # fmt: skip
    if retrained := [j.name for j in jobs if j.action == "retrain"]:
        index.setdefault("history", []).append(
            {"time": runio.now(), "previous_overrides": index.get("overrides"), "retrained": retrained}
        )
    preset, first = index["preset"], jobs[0].cfg
    index.update(preset=preset, preset_note=load_preset(preset).get("description", ""),
                 arms=list(dict.fromkeys([*index.get("arms", []), *arms])),
                 seeds=sorted({int(s) for r in runs.values() for s in r}), runs=runs, overrides=list(extra),
                 machine=runio.environment(first.device if first.device != "auto" else None))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    runio.write_json(out / "reproduce.json", index)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
