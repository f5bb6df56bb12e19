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
never ``summary.json`` without its scores.

An evaluation's identity is the checkpoint it scored *and* the protocol it scored it with (test
images, transformation scheme and seed, transformations per image, TTA views, layers,
precision). :func:`stale_reason` is the one judge of whether an evaluation folder is the run's
own evaluation of the checkpoint the run holds now; :func:`eval_status` (``current``, ``stale``
or ``missing``, for ``dainv reproduce``) and the report both ask it.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dainv import runio
from dainv.checkpoint import file_digest
from dainv.errors import ConfigError, RunError

__all__ = [
    "EvaluationInterrupted",
    "no_kept_checkpoint",
    "check_eval_target",
    "write_eval_folder",
    "eval_status",
    "stale_reason",
    "protocol_difference",
    "own_protocol",
    "target_checkpoint",
    "kept_checkpoints",
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


def kept_checkpoints(run_dir: Path) -> list[str]:
    """Names (``epoch-NNNN``) of the kept checkpoints ``RUN/checkpoints/epoch-NNNN.pt``, in order."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("epoch-*.pt") if _KEPT.match(p.stem))


def no_kept_checkpoint(run_dir: Path, name: str) -> RunError:
    """The error for ``--checkpoint NAME`` that the run did not keep: it names the setting that
    decides which epochs are kept (``train.keep_epochs``), the run's value and how to keep one."""
    train = _run_config(run_dir).get("train")
    kept = (train.get("keep_epochs") if isinstance(train, dict) else None) or []
    epoch = int(name[6:]) if _KEPT.match(name) else None
    return RunError(
        f"{Path(run_dir) / 'checkpoints' / (name + '.pt')} does not exist: a run keeps the checkpoints "
        f"of the epochs listed in train.keep_epochs only (this run: {kept or 'none'}); kept "
        f"checkpoints here: {', '.join(kept_checkpoints(run_dir)) or 'none'}. Evaluate the final model "
        f"with `dainv evaluate {run_dir}`, or train with --set \"train.keep_epochs=[{epoch or 'N'}]\" "
        f"to keep epoch {epoch or 'N'}"
    )


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

    ``current``: complete (``summary.json`` marked complete, with ``scores.npz``) and, by
    :func:`stale_reason`, the run's own evaluation of the checkpoint it holds now. ``stale``:
    anything else that is there — incomplete or damaged, another checkpoint, another run, an
    older dainv without a checkpoint record, or another protocol. ``missing``: no
    ``summary.json``.
    """
    run_dir = Path(run_dir)
    eval_dir = Path(eval_dir) if eval_dir is not None else run_dir / "eval"
    if not (eval_dir / "summary.json").is_file():
        return "missing"
    summary = _summary(eval_dir)
    if summary is None or summary.get("complete") is not True or not (eval_dir / "scores.npz").is_file():
        return "stale"
    return "stale" if stale_reason(run_dir, eval_dir, summary) else "current"


def _summary(eval_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((Path(eval_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a plain dict (``{}`` when absent or unreadable)."""
    try:
        cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def stale_reason(run_dir: Path, eval_dir: Path | None = None, summary: dict[str, Any] | None = None) -> str | None:
    """Why an evaluation folder is not the run's own evaluation of the checkpoint the run holds
    now (one sentence, Markdown), or ``None`` when it is, or when nothing there can tell.

    The one judge, for ``dainv reproduce`` (:func:`eval_status`) and the report. In order: the
    evaluation records no checkpoint (an older dainv); it was written for another run of this
    folder (``run_id`` in ``meta.json`` and ``summary.json``: a ``--force`` restart, a copy);
    ``eval/`` scored a checkpoint that is not the final one; the checkpoint the run has now —
    ``final.pt``, else ``last.pt`` (a killed run), or the kept ``epoch-NNNN.pt`` — has other
    content than the one scored (SHA-256); the protocol is not the run's own
    (:func:`protocol_difference`). Completeness is :func:`eval_status`'s concern.
    """
    run_dir = Path(run_dir)
    eval_dir = Path(eval_dir) if eval_dir is not None else run_dir / "eval"
    summary = summary if summary is not None else _summary(eval_dir)
    if summary is None:
        return None
    name = f"`{eval_dir.name}/`"
    why = _checkpoint_reason(run_dir, eval_dir, summary, name)
    if why is None and (diff := protocol_difference(run_dir, eval_dir, summary)):
        why = (f"{name} was made with another evaluation protocol than the run's own ({'; '.join(diff)}), so it "
               "is not the run's evaluation: comparisons with other arms would not be paired; `dainv reproduce` "
               "(or `dainv evaluate RUN`) evaluates it again — keep a differently configured evaluation apart "
               "with `dainv evaluate … --out DIR`")  # fmt: skip
    return why


def _checkpoint_reason(run_dir: Path, eval_dir: Path, summary: dict[str, Any], name: str) -> str | None:
    """:func:`stale_reason`'s checks of the checkpoint (and run) an evaluation scored."""
    rec = summary.get("checkpoint")
    if not isinstance(rec, dict):
        return (f"{name} does not record which checkpoint it scored (an evaluation older than that record): "
                "it may not be the final one; re-run `dainv evaluate`")  # fmt: skip
    mine, theirs = runio.read_meta(run_dir, strict=False).get("run_id"), summary.get("run_id")
    if mine and theirs and mine != theirs:
        return (f"{name} was written for another run than this one (the run ids of `meta.json` and "
                "`summary.json` differ: a run that `--force` replaced, or another folder's); re-run `dainv evaluate`")  # fmt: skip
    if not _is_kept(eval_dir):
        planned = (_run_config(run_dir).get("train") or {}).get("epochs")
        planned = planned if isinstance(planned, int) and not isinstance(planned, bool) else None
        ep = rec.get("epoch")
        where = f"epoch {ep}" + (f" of {planned}" if planned else "")
        if rec.get("final") is False:
            return f"{name} scored a checkpoint that is not the final one ({where}); re-run `dainv evaluate`"
        if isinstance(ep, int) and planned is not None and ep < planned:
            return f"{name} scored the checkpoint of {where}, not the final one; re-run `dainv evaluate`"
    target = target_checkpoint(run_dir, eval_dir)
    if target is None or not isinstance(rec.get("sha256"), str):
        return None  # no checkpoint to compare with (a copy without checkpoints)
    try:
        if file_digest(target) == rec["sha256"]:
            return None
    except OSError:
        return None
    return (f"`checkpoints/{target.name}` is not the checkpoint {name} scored (the content hashes differ: "
            "trained further or again since, or the evaluation is another run's); re-run `dainv evaluate`")  # fmt: skip


def _is_kept(eval_dir: Path) -> bool:
    name = Path(eval_dir).name.split("+")[0]
    return name.startswith("eval-") and bool(_KEPT.match(name[5:]))


@functools.lru_cache(maxsize=64)
def _tap_names(model: str, kwargs_json: str) -> tuple[str, ...] | None:
    """A registered model's tap names, built on the meta device (no memory, no compute)."""
    import torch

    from dainv.models import build_model

    try:
        with torch.device("meta"):
            net = build_model(model, 10, 3, **json.loads(kwargs_json))
        return tuple(net.tap_names)
    except Exception:  # noqa: BLE001 - a model that cannot be built here: layers not compared
        return None


def own_protocol(cfg: Any, scheme: str | None = None) -> dict[str, Any]:
    """The ``protocol`` entries of ``summary.json`` that the run's own evaluation (by its
    ``config.yaml``) records: scheme and its parameters, transformations per image, TTA views,
    interpolation, seed; precision and layers where they are known without the data."""
    from dainv.config import model_kwargs
    from dainv.measure import Protocol

    rec = Protocol.from_config(cfg, scheme=scheme).record()
    if cfg.train.precision != "auto":
        rec["precision"] = cfg.train.precision
    if ":" not in cfg.model.name:
        taps = _tap_names(cfg.model.name, json.dumps(model_kwargs(cfg.model), sort_keys=True))
        if taps is not None:
            rec["layers"] = list(taps)
    return json.loads(json.dumps(rec))  # as read back from summary.json (tuples → lists)


def protocol_difference(run_dir: Path, eval_dir: Path, summary: dict[str, Any] | None = None) -> list[str]:
    """How an evaluation's protocol differs from the run's own (:func:`own_protocol`; under the
    scheme of an ``eval+SCHEME`` folder), as ``"seed 3, the run's 0"`` phrases; test images are
    compared by content (``test_digest`` against ``meta.json``'s ``data``). Entries that either
    side does not record (older runs and evaluations) are not compared."""
    from dainv.config import from_dict

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
    return out + _images_difference(runio.read_meta(run_dir, strict=False).get("data"), got)


def _images_difference(data: Any, got: dict[str, Any]) -> list[str]:
    """The test images of an evaluation against those the run was tested on (``meta.json``)."""
    ref = data.get("digest", {}).get("test") if isinstance(data, dict) and isinstance(data.get("digest"), dict) else None
    if not ref or not got.get("test_digest") or got["test_digest"] == ref:
        return []
    parts = []
    if got.get("n_test") != data.get("n_test"):
        parts.append(f"{got.get('n_test')} test images, the run's {data.get('n_test')}")
    if got.get("data") != data.get("name"):
        parts.append(f"data set {got.get('data')}, the run's {data.get('name')}")
    return parts or ["other test images (the same number, another content)"]


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
        with runio.staging_folder(out) as tmp:
            _write_file(tmp / "scores.npz", _npz_bytes(scores))
            if per_transform:
                flat = {f"{k}/{layer}": v for k, d in per_transform.items() for layer, v in d.items()}
                _write_file(tmp / "per_transform.npz", _npz_bytes(flat))
            text = json.dumps({**summary, "complete": True}, indent=2) + "\n"
            _write_file(tmp / "summary.json", text.encode())
            runio.swap_in(tmp, out)
    except OSError as e:  # writing a file (staging and swapping raise a RunError naming the path)
        raise RunError(f"cannot write the evaluation folder {out}: {e.strerror or e}") from None
    return out
