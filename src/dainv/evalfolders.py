"""Evaluation folders (files: docs/method.md §6): built beside the target and renamed over it, so a kill leaves
the previous complete evaluation (or none). An evaluation is the checkpoint it scored *and* its protocol:
:func:`stale_reason` is the one judge of whether a folder is the run's own evaluation of its checkpoint now."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from dainv import runio
from dainv.checkpoint import file_digest, run_checkpoint
from dainv.config import from_dict, model_kwargs
from dainv.errors import ConfigError, RunError
from dainv.measure import Protocol
from dainv.models import build_model

__all__ = [
    "EvaluationInterrupted", "no_kept_checkpoint", "check_eval_target", "write_eval_folder", "eval_status", "stale_reason",
    "protocol_difference", "own_protocol", "target_checkpoint", "kept_checkpoints", "read_eval_folder",
]  # fmt: skip

_KEPT = re.compile(r"^epoch-\d{4,}$")
_EVAL_FILES = {"summary.json", "scores.npz", "per_transform.npz"}


class EvaluationInterrupted(RunError):
    """Ctrl-C (SIGINT) during an evaluation: nothing was written; there is nothing to resume."""

    exit_code = 130

    def __init__(self, out: Path | None) -> None:
        where = f"{out} is unchanged (a previous evaluation there, if any, is kept)" if out else "nothing written"
        super().__init__(f"evaluation interrupted; nothing was written — {where}. An evaluation has nothing "
                         "to resume: run the same `dainv evaluate` command again")  # fmt: skip


def kept_checkpoints(run_dir: Path) -> list[str]:
    """Names (``epoch-NNNN``) of the kept checkpoints ``RUN/checkpoints/epoch-NNNN.pt``, in order."""
    return sorted(p.stem for p in (Path(run_dir) / "checkpoints").glob("epoch-*.pt") if _KEPT.match(p.stem))


def no_kept_checkpoint(run_dir: Path, name: str) -> RunError:
    """The error for ``--checkpoint NAME`` that the run did not keep: it names the setting that
    decides which epochs are kept (``train.keep_epochs``), the run's value and how to keep one."""
    train = _run_config(run_dir).get("train")
    kept = (train.get("keep_epochs") if isinstance(train, dict) else None) or []
    epoch = int(name[6:]) if _KEPT.match(name) else None
    return RunError(f"{Path(run_dir) / 'checkpoints' / (name + '.pt')} does not exist: a run keeps the checkpoints "
                    f"of the epochs listed in train.keep_epochs only (this run: {kept or 'none'}); kept checkpoints "
                    f"here: {', '.join(kept_checkpoints(run_dir)) or 'none'}. Evaluate the final model with `dainv "
                    f"evaluate {run_dir}`, or train with --set \"train.keep_epochs=[{epoch or 'N'}]\" to keep epoch {epoch or 'N'}")  # fmt: skip


def _kept_of(eval_dir: Path) -> str | None:
    """The kept checkpoint (``epoch-NNNN``) that ``eval-epoch-NNNN[+SCHEME]`` is for, else None."""
    name = Path(eval_dir).name.split("+")[0]
    return name[5:] if name.startswith("eval-") and _KEPT.match(name[5:]) else None


def target_checkpoint(run_dir: Path, eval_dir: Path) -> Path | None:
    """The checkpoint an evaluation folder should have scored: ``eval-epoch-NNNN`` → that kept
    checkpoint; otherwise the run's ``final.pt``, else its ``last.pt`` (``None``: neither)."""
    if (kept := _kept_of(eval_dir)) is None:
        return run_checkpoint(run_dir)
    p = Path(run_dir) / "checkpoints" / f"{kept}.pt"
    return p if p.is_file() else None


def _summary(eval_dir: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        if isinstance(summary := json.loads((Path(eval_dir) / "summary.json").read_text()), dict):
            return summary
    return None


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a plain dict (``{}`` when absent or unreadable)."""
    with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
        if isinstance(cfg := yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")), dict):
            return cfg
    return {}


def eval_status(run_dir: Path, eval_dir: Path | None = None) -> str:
    """May an evaluation folder be used as the run's? ``"current"``: complete (``summary.json`` marked complete, with
    ``scores.npz``) and not :func:`stale_reason`; ``"stale"``: anything else there; ``"missing"``: no summary."""
    run_dir, eval_dir = Path(run_dir), Path(eval_dir if eval_dir is not None else Path(run_dir) / "eval")
    if not (eval_dir / "summary.json").is_file():
        return "missing"
    summary = _summary(eval_dir)
    if summary is None or summary.get("complete") is not True or not (eval_dir / "scores.npz").is_file():
        return "stale"
    return "stale" if stale_reason(run_dir, eval_dir, summary) else "current"


def stale_reason(run_dir: Path, eval_dir: Path | None = None, summary: dict[str, Any] | None = None) -> str | None:
    """Why an evaluation folder is not the run's own evaluation of the checkpoint now there (a Markdown sentence),
    or ``None``. In order: no checkpoint record; another run's (``run_id``); ``eval/`` of a checkpoint not the final
    one; :func:`target_checkpoint` with other content (SHA-256); another protocol."""
    run_dir, eval_dir = Path(run_dir), Path(eval_dir if eval_dir is not None else Path(run_dir) / "eval")
    summary = summary if summary is not None else _summary(eval_dir)
    if summary is None:
        return None
    name, rec = f"`{eval_dir.name}/`", summary.get("checkpoint")
    if not isinstance(rec, dict):
        return (f"{name} does not record which checkpoint it scored (an evaluation older than that record): "
                "it may not be the final one; re-run `dainv evaluate`")  # fmt: skip
    mine, theirs = runio.read_meta(run_dir, strict=False).get("run_id"), summary.get("run_id")
    if mine and theirs and mine != theirs:
        return (f"{name} was written for another run than this one (the run ids of `meta.json` and "
                "`summary.json` differ: a run that `--force` replaced, or another folder's); re-run `dainv evaluate`")  # fmt: skip
    if _kept_of(eval_dir) is None and (why := _not_final(rec, _run_config(run_dir))):
        return f"{name} {why}; re-run `dainv evaluate`"
    target = target_checkpoint(run_dir, eval_dir)
    with contextlib.suppress(OSError):  # no checkpoint to compare with (a copy without checkpoints)
        if target is not None and isinstance(rec.get("sha256"), str) and file_digest(target) != rec["sha256"]:
            return (f"`checkpoints/{target.name}` is not the checkpoint {name} scored (the content hashes differ: "
                    "trained further or again since, or the evaluation is another run's); re-run `dainv evaluate`")  # fmt: skip
    if diff := protocol_difference(run_dir, eval_dir, summary):
        return (f"{name} was made with another evaluation protocol than the run's own ({'; '.join(diff)}), so it "
                "is not the run's evaluation: comparisons with other arms would not be paired; `dainv reproduce` "
                "(or `dainv evaluate RUN`) evaluates it again — keep a differently configured evaluation apart "
                "with `dainv evaluate … --out DIR`")  # fmt: skip
    return None


def _not_final(rec: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """Why ``rec``, the checkpoint an ``eval/`` folder scored, is not the run's final one, or None."""
    planned = (cfg.get("train") or {}).get("epochs")
    planned = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
    ep = rec.get("epoch")
    where = f"epoch {ep}" + (f" of {planned}" if planned else "")
    if rec.get("final") is False:
        return f"scored a checkpoint that is not the final one ({where})"
    if isinstance(ep, int) and planned is not None and ep < planned:
        return f"scored the checkpoint of {where}, not the final one"
    return None


@functools.lru_cache(maxsize=64)
def _tap_names(model: str, kwargs_json: str) -> tuple[str, ...] | None:
    """A registered model's tap names, built on the meta device (no memory, no compute)."""
    try:
        return tuple(build_model(model, 10, 3, shapes_only=True, **json.loads(kwargs_json)).tap_names)
    except Exception:  # noqa: BLE001 - a model that cannot be built here: layers not compared
        return None


def own_protocol(cfg: Any, scheme: str | None = None) -> dict[str, Any]:
    """The ``protocol`` the run's own evaluation records (by its config; precision, layers: if known without data)."""
    rec = Protocol.from_config(cfg, scheme=scheme).record()
    if cfg.train.precision != "auto":
        rec["precision"] = cfg.train.precision
    if ":" not in cfg.model.name and (taps := _tap_names(cfg.model.name, json.dumps(model_kwargs(cfg.model), sort_keys=True))) is not None:
        rec["layers"] = list(taps)
    return json.loads(json.dumps(rec))  # as read back from summary.json (tuples → lists)


def protocol_difference(run_dir: Path, eval_dir: Path, summary: dict[str, Any] | None = None) -> list[str]:
    """How an evaluation's protocol differs from the run's own (:func:`own_protocol`) as ``"seed 3, the run's 0"``
    phrases; test images by content (``test_digest``); what either side does not record is not compared."""
    summary = summary if summary is not None else _summary(eval_dir)
    got = summary.get("protocol") if isinstance(summary, dict) else None
    raw = _run_config(run_dir)
    if not isinstance(got, dict) or not raw:
        return []
    try:
        want = own_protocol(from_dict(raw), Path(eval_dir).name.partition("+")[2] or None)
    except (ConfigError, ValueError, TypeError, KeyError):
        return []
    out = [f"{k} {got[k]!r}, the run's {v!r}" for k, v in want.items() if k in got and got[k] != v and k != "scheme_params"]
    if not out and "scheme_params" in got and got["scheme_params"] != want["scheme_params"]:
        out.append(f"the parameters of scheme {got.get('scheme')!r} differ from the run's")
    data = runio.read_meta(run_dir, strict=False).get("data")
    ref = data.get("digest", {}).get("test") if isinstance(data, dict) and isinstance(data.get("digest"), dict) else None
    if not ref or not got.get("test_digest") or got["test_digest"] == ref:
        return out
    parts = []
    if got.get("n_test") != data.get("n_test"):
        parts.append(f"{got.get('n_test')} test images, the run's {data.get('n_test')}")
    if got.get("data") != data.get("name"):
        parts.append(f"data set {got.get('data')}, the run's {data.get('name')}")
    return out + (parts or ["other test images (the same number, another content)"])


def read_eval_folder(eval_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]] | None:
    """A complete evaluation folder as ``(summary, scores, per_transform)`` (``per_transform``
    ``{}`` when it has none); ``None`` when it is missing, incomplete or unreadable."""
    eval_dir = Path(eval_dir)
    summary = _summary(eval_dir)
    if summary is None or summary.get("complete") is not True:
        return None

    def npz(path: Path) -> dict[str, np.ndarray]:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    try:
        scores = npz(eval_dir / "scores.npz")
        per_t: dict[str, dict[str, np.ndarray]] = {}
        if (eval_dir / "per_transform.npz").is_file():
            for key, v in npz(eval_dir / "per_transform.npz").items():
                name, _, layer = key.partition("/")
                per_t.setdefault(name, {})[layer] = v
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # absent, truncated, damaged
        return None
    summary.pop("complete")
    return summary, scores, per_t


def check_eval_target(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a folder holding anything but an evaluation."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a folder; choose another evaluation folder (--out)")
    if out.is_dir() and (others := [p.name for p in out.iterdir() if p.name not in _EVAL_FILES]):
        raise RunError(f"{out} holds other files ({', '.join(sorted(others)[:3])}) and is not an evaluation "
                       "folder; choose another --out (an evaluation replaces its folder as a whole)")  # fmt: skip


def write_eval_folder(out: Path, summary: dict[str, Any], scores: dict[str, np.ndarray],
                      per_transform: dict[str, dict[str, np.ndarray]] | None = None) -> Path:  # fmt: skip
    """Write an evaluation folder atomically (temp folder + rename); returns ``out``. The scores
    files are written before ``summary.json``, which gets ``"complete": true``."""
    out = Path(out)
    check_eval_target(out)
    files: dict[str, Callable[[IO[bytes]], Any]] = {"scores.npz": lambda f: np.savez_compressed(f, **scores)}
    if per_transform:
        flat = {f"{k}/{layer}": v for k, d in per_transform.items() for layer, v in d.items()}
        files["per_transform.npz"] = lambda f: np.savez_compressed(f, **flat)
    files["summary.json"] = lambda f: f.write((json.dumps({**summary, "complete": True}, indent=2) + "\n").encode())
    try:
        with runio.staging_folder(out) as tmp:
            for name, fill in files.items():  # in this order: summary.json last
                with open(tmp / name, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fsync(f.fileno())
            runio.swap_in(tmp, out)
    except OSError as e:  # writing a file (staging and swapping raise a RunError naming the path)
        raise RunError(f"cannot write the evaluation folder {out}: {e.strerror or e}") from None
    return out
