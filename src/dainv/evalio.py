"""Evaluation folders: written as one atomic unit, and checked against the checkpoint they scored.

An evaluation folder (``RUN/eval/``, ``RUN/eval-epoch-NNNN/`` or ``--out``) holds

* ``scores.npz`` — ``{layer: (N, T) float32}`` Eq. 2 scores (NaN where undefined);
* ``per_transform.npz`` — ``{"transformation/layer": (N, T)}``, with ``per_transform`` only;
* ``summary.json`` — accuracy, per-layer statistics, the protocol, ``"complete": true`` and
  ``"checkpoint": {"path", "epoch", "step", "sha256", "final"}``: which checkpoint was scored;
  ``"copied_from"`` when the scores are those of another folder that scored a file of the same
  content the same way (a kept checkpoint that is the final model: see ``evaluate_kept``).

The files are written into a hidden temporary folder beside the target, which is then renamed
over it: a process killed at any moment leaves the previous complete evaluation (or none),
never ``summary.json`` without its scores. :func:`eval_status` says whether an evaluation is
``current`` (complete, and scored the checkpoint the run holds now, by SHA-256), ``stale`` or
``missing``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dainv import runio
from dainv.checkpoint import file_digest
from dainv.errors import RunError

__all__ = [
    "EvaluationInterrupted",
    "check_eval_target",
    "write_eval_folder",
    "eval_status",
    "target_checkpoint",
    "kept_checkpoints",
    "read_meta",
    "read_eval_folder",
]

_KEPT = re.compile(r"^epoch-\d{4,}$")
_EVAL_FILES = {"summary.json", "scores.npz", "per_transform.npz"}


class EvaluationInterrupted(RunError):
    """Ctrl-C (SIGINT) during an evaluation: nothing was written; there is nothing to resume."""

    exit_code = 130

    def __init__(self, out: Path | None) -> None:
        where = f"{out} is unchanged (a previous evaluation there, if any, is kept)" if out else "nothing written"
        super().__init__(
            f"evaluation interrupted; nothing was written — {where}. An evaluation has nothing "
            "to resume: run the same `dainv evaluate` command again"
        )


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's ``meta.json`` as a dict; ``{}`` when absent or unreadable."""
    try:
        meta = json.loads((Path(run_dir) / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def kept_checkpoints(run_dir: Path) -> list[str]:
    """Names (``epoch-NNNN``) of the kept checkpoints ``RUN/checkpoints/epoch-NNNN.pt``, in order."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("epoch-*.pt") if _KEPT.match(p.stem))


def target_checkpoint(run_dir: Path, eval_dir: Path) -> Path | None:
    """The checkpoint an evaluation folder should have scored: ``eval-epoch-NNNN`` → that kept
    checkpoint; otherwise the run's ``final.pt``, else its ``last.pt`` (``None``: neither)."""
    ck = Path(run_dir) / "checkpoints"
    name = Path(eval_dir).name.split("+")[0]  # eval-epoch-NNNN+SCHEME: another scheme, same checkpoint
    if name.startswith("eval-") and _KEPT.match(name[5:]):
        p = ck / f"{name[5:]}.pt"
        return p if p.is_file() else None
    for f in ("final.pt", "last.pt"):
        if (ck / f).is_file():
            return ck / f
    return None


def eval_status(run_dir: Path, eval_dir: Path | None = None) -> str:
    """``"current"``, ``"stale"`` or ``"missing"``: may an evaluation folder be used as the run's?

    ``current``: complete (``summary.json`` marked complete, with ``scores.npz``) and scored
    exactly the checkpoint the run holds now (SHA-256 of :func:`target_checkpoint`): for a
    finished run, its final model. ``stale``: anything else that is there — written before the
    run finished or was retrained, by an older dainv without a checkpoint record, or damaged.
    ``missing``: no ``summary.json``.
    """
    run_dir = Path(run_dir)
    eval_dir = Path(eval_dir) if eval_dir is not None else run_dir / "eval"
    if not (eval_dir / "summary.json").is_file():
        return "missing"
    try:
        summary = json.loads((eval_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return "stale"
    if not isinstance(summary, dict) or summary.get("complete") is not True:
        return "stale"
    if not (eval_dir / "scores.npz").is_file():
        return "stale"
    rec = summary.get("checkpoint")
    target = target_checkpoint(run_dir, eval_dir)
    if target is None or not isinstance(rec, dict) or rec.get("sha256") != file_digest(target):
        return "stale"
    return "current"


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_eval_folder(eval_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]] | None:
    """A complete evaluation folder as ``(summary, scores, per_transform)`` (``per_transform``
    ``{}`` when it has none); ``None`` when it is missing, incomplete or unreadable."""
    eval_dir = Path(eval_dir)
    try:
        summary = json.loads((eval_dir / "summary.json").read_text())
        if not isinstance(summary, dict) or summary.get("complete") is not True:
            return None
        scores = _read_npz(eval_dir / "scores.npz")
        per_t: dict[str, dict[str, np.ndarray]] = {}
        if (eval_dir / "per_transform.npz").is_file():
            for key, v in _read_npz(eval_dir / "per_transform.npz").items():
                name, _, layer = key.partition("/")
                per_t.setdefault(name, {})[layer] = v
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):  # absent, truncated, damaged
        return None
    summary.pop("complete")
    return summary, scores, per_t


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _remove_leftovers(out: Path) -> None:
    """Temp and old folders of ``out`` left by a killed evaluation (whose process is gone)."""
    for p in out.parent.glob(f".{out.name}.*-*"):
        m = re.match(rf"^\.{re.escape(out.name)}\.(tmp|old)-(\d+)-", p.name)
        if m and p.is_dir() and not runio.pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def check_eval_target(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a folder holding anything but an evaluation."""
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a folder; choose another evaluation folder (--out)")
    if out.is_dir():
        others = [p.name for p in out.iterdir() if p.name not in _EVAL_FILES]
        if others:
            raise RunError(
                f"{out} holds other files ({', '.join(sorted(others)[:3])}) and is not an evaluation "
                "folder; choose another --out (an evaluation replaces its folder as a whole)"
            )


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` over ``out``: between the two renames neither exists (never a half one)."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-{os.getpid()}-", dir=out.parent))
        os.replace(out, old / "x")
    os.replace(tmp, out)
    with contextlib.suppress(OSError):
        fd = os.open(out.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_eval_folder(
    out: Path,
    summary: dict[str, Any],
    scores: dict[str, np.ndarray],
    per_transform: dict[str, dict[str, np.ndarray]] | None = None,
) -> Path:
    """Write an evaluation folder atomically (temp folder + rename); returns ``out``.

    ``summary.json`` gets ``"complete": true``; the scores files are written before it.
    """
    out = Path(out)
    check_eval_target(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise RunError(f"cannot write the evaluation folder {out}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o777 & ~runio._UMASK)
        _write_file(tmp / "scores.npz", _npz_bytes(scores))
        if per_transform:
            flat = {f"{k}/{layer}": v for k, d in per_transform.items() for layer, v in d.items()}
            _write_file(tmp / "per_transform.npz", _npz_bytes(flat))
        text = json.dumps({**summary, "complete": True}, indent=2) + "\n"
        _write_file(tmp / "summary.json", text.encode())
        _swap_in(tmp, out)
    except OSError as e:
        raise RunError(f"cannot write the evaluation folder {out}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
