"""The checkpoint format: what a training run writes and what ``dainv evaluate`` reads. A checkpoint is a
``torch.save``d dict: ``format`` (2; another is refused), ``model`` (the ``state_dict``), ``model_info``
(``{"name", "num_classes", "in_channels", "kwargs"}``, enough to rebuild the network with
:func:`dainv.models.build_model`; for a :func:`dainv.models.tapped` ``module:factory`` network, ``kwargs["layers"]``
are its tap layers), ``config`` (the run's resolved config as a dict; ``None`` outside a dainv run: evaluation then
uses the defaults), ``epoch``, ``step`` (``None`` when unknown). Training checkpoints add the optimizer, schedule,
sampler and RNG states to resume; :func:`save_checkpoint` writes the public part from any training loop."""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dainv import runio
from dainv.config import differences
from dainv.errors import RunError
from dainv.models import Tapped, build_model

__all__ = [
    "FORMAT", "model_info", "save_checkpoint", "load_checkpoint", "safe_load", "build_from_checkpoint", "load_weights",
    "run_checkpoint", "checkpoint_path", "file_digest", "check_finite", "check_resumable", "recovery_hint", "restore_rng",
]  # fmt: skip

FORMAT = 2


def model_info(name: str, num_classes: int, in_channels: int = 3, *, model: nn.Module | None = None, **kwargs: Any) -> dict[str, Any]:
    """The ``model_info`` entry: registry name, class count, input channels, constructor kwargs; with the built ``model``
    of a ``module:factory`` that is a :func:`~dainv.models.tapped` wrapper, its tap layers as ``kwargs["layers"]``."""
    info = {"name": name, "num_classes": int(num_classes), "in_channels": int(in_channels), "kwargs": dict(kwargs)}
    return _with_taps(info, model) if model is not None else info


def _with_taps(info: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """``info`` with the tap layers of a tapped() plain module of a factory (see model_info)."""
    for attr in ("_orig_mod", "module"):  # torch.compile, DDP
        model = getattr(model, attr, model) if not isinstance(model, Tapped) else model
    kwargs = info.get("kwargs") or {}
    if isinstance(model, Tapped) and ":" in str(info.get("name")) and "layers" not in kwargs:
        info = {**info, "kwargs": {**kwargs, "layers": [n for n in model.tap_names if n != "input"]}}
    return info


def save_checkpoint(path: str | Path, model: nn.Module, *, info: dict[str, Any], config: dict[str, Any] | None = None,
                    epoch: int | None = None, step: int | None = None, **extra: Any) -> Path:  # fmt: skip
    """Write ``model``'s ``state_dict`` (and ``extra`` entries) atomically to ``path`` in the public format, e.g.
    ``save_checkpoint("mynet.pt", net, info=model_info("wrn-16-4", 10))``; ``config``: ``dainv.config.to_dict``'s."""
    state = {"format": FORMAT, "model": model.state_dict(), "model_info": _with_taps(dict(info), model),
             "config": config, "epoch": epoch, "step": step, **extra}  # fmt: skip
    runio.atomic_write(Path(path), lambda f: torch.save(state, f))
    return Path(path)


def run_checkpoint(run_dir: str | Path) -> Path | None:
    """A run folder's checkpoint: ``final.pt``, else ``last.pt`` (a stopped or killed run); None: neither."""
    ck = Path(run_dir) / "checkpoints"
    return next((ck / name for name in ("final.pt", "last.pt") if (ck / name).is_file()), None)


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's checkpoint (:func:`run_checkpoint`), to load."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise RunError(f"{path} does not exist; give a run folder or a checkpoint file (.pt)")
    if (found := run_checkpoint(path)) is None:
        raise RunError(f"{path} holds no checkpoint (looked for checkpoints/final.pt and checkpoints/last.pt); "
                       "is it a dainv run folder that finished at least one epoch?")  # fmt: skip
    return found


def safe_load(path: str | Path) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True``: a ``.pt`` file is a pickle, which may run code. A file
    refused, or empty, is a :class:`RunError` naming it and the fix; other read errors propagate, for the caller."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise RunError(f"{path} is empty (0 bytes), not a saved PyTorch file: its writing did not finish "
                       "(a full disk, or an interrupted copy); save or copy it again")  # fmt: skip
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol warning would hide the message
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # how torch starts a refusal
            raise
        named = re.search(r"GLOBAL ([\w.]+)", str(e))
        if named is None:  # bytes the unpickler cannot parse at all: damaged, not dangerous
            raise pickle.UnpicklingError("not pickle data that PyTorch writes") from None
        raise RunError(f"refused to load {path}: it contains Python objects other than tensors and plain data (it names "
                       f"{named.group(1)}), and reading those could run arbitrary code, so dainv does not. Only load files "
                       "you trust; to use one you trust, re-save it with plain data from Python "
                       "(dainv.checkpoint.save_checkpoint, or torch.save(model.state_dict(), FILE) for --weights)") from None  # fmt: skip


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint (a file, or a run folder's final/last), all onto the CPU (RNG states too), so that
    one written on any device loads anywhere; anything unreadable, refused or not a checkpoint is a RunError."""
    ck = checkpoint_path(path)
    try:
        state = safe_load(ck)
    except RunError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise RunError(f"cannot read checkpoint {ck}: {e}. The file is damaged or not a PyTorch file; use another "
                       "checkpoint of the run (checkpoints/last.pt or an epoch-NNNN.pt), or train again") from None  # fmt: skip
    if not isinstance(state, dict) or "model" not in state:
        raise RunError(f"{ck} is not a dainv checkpoint (no 'model' entry); for a plain state_dict use "
                       "`dainv evaluate --model NAME --weights FILE`")  # fmt: skip
    if not isinstance(state.get("model_info"), dict) or "name" not in state["model_info"]:
        raise RunError(f"{ck} has no 'model_info' naming its network; write it with "
                       "dainv.checkpoint.save_checkpoint(..., info=model_info(NAME, num_classes))")  # fmt: skip
    if state.get("format") != FORMAT:
        raise RunError(f"{ck} is a dainv checkpoint of format {state.get('format', 1)}; this dainv reads "
                       f"format {FORMAT}: evaluate it with the dainv that wrote it, or train again")  # fmt: skip
    state["path"] = str(ck)
    return state


def build_from_checkpoint(state: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """The network of a loaded checkpoint, weights restored, in eval mode on ``device``."""
    info, where = state["model_info"], state.get("path", "")
    try:
        model = build_model(info["name"], info["num_classes"], info["in_channels"], **info["kwargs"])
    except (ValueError, TypeError) as e:
        raise RunError(f"checkpoint {where}: cannot build its model {info['name']!r}: {e}. If it is your own model, "
                       "register it (dainv.models.register_model) or name it as module.path:factory") from None  # fmt: skip
    load_weights(model, state["model"], f"checkpoint {where}: its weights do not fit model {info['name']!r} "
                 f"{info['kwargs']}", "the checkpoint's model_info must name the network and the constructor "
                 "arguments it was saved with")  # fmt: skip
    check_finite(state["model"], state.get("path", "the checkpoint"))
    return model.to(device).eval()


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def load_weights(model: nn.Module, state_dict: Any, what: str, fix: str) -> None:
    """``model.load_state_dict(state_dict)``, or a RunError: ``what``, a few missing and unexpected keys and tensors of
    another shape (then a count), then ``fix`` — torch's own message lists every key over many lines."""
    try:
        model.load_state_dict(state_dict)
        return
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        error = first[0] if first else type(e).__name__
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model" for k, v in state_dict.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]  # fmt: skip
    parts = [f"{label} {_few(keys)}" for label, keys in
             (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)) if keys]  # fmt: skip
    raise RunError(f"{what}: {'; '.join(parts) or error}; {fix}") from None


def check_finite(state_dict: dict[str, Any], what: str | Path) -> None:
    """Refuse weights with NaN or Inf values, naming the tensors: a network with them computes
    NaN for every image, and its accuracy and invariance scores would mean nothing."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip
    if bad:
        raise RunError(f"the weights in {what} are not finite: {len(bad)} tensor(s) hold NaN or Inf ({_few(bad, 5)}); "
                       "nothing was evaluated. They come from a diverged or damaged training run: evaluate an earlier "
                       "checkpoint, or train again (e.g. with a lower learning rate)")  # fmt: skip


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes: identifies exactly which checkpoint an evaluation scored."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------- training resume
def check_resumable(state: Any, mine: dict[str, Any], theirs: dict[str, Any], ck: Path) -> None:
    """Refuse a checkpoint of another config (``mine``: the run's ``to_dict``, ``theirs``: the
    checkpoint's) by the "same run?" rule (:func:`dainv.config.differences`), length free."""
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise RunError(f"{ck} is not a dainv checkpoint (no model/config entries)")
    if diff := differences(mine, theirs, length=False):
        shown = "; ".join(f"{k} = {t!r} there, {m!r} here" for k, t, m in diff[:5])
        raise RunError(f"checkpoint {ck} was written with a different config than its run's config.yaml ({shown}); "
                       "restore the run's own config.yaml, or start a new run (--out)")  # fmt: skip


def recovery_hint(run_dir: Path, bad: Path) -> str:
    """How to go on when ``bad`` (a run's checkpoint) cannot be read: which other one to use."""
    ck = Path(run_dir) / "checkpoints"
    others = sorted(p for p in ck.glob("*.pt") if p.name != Path(bad).name)
    if not others:
        return "no other checkpoint is in the run; start it again with --force"
    return (f"other checkpoints of the run: {', '.join(p.name for p in others[-3:])}; to resume from one, copy it "
            f"over {ck / 'last.pt'} (e.g. cp {others[-1]} {ck / 'last.pt'}) and --resume again, or start again with --force")  # fmt: skip


def restore_rng(state: dict[str, Any], gen: torch.Generator, gen_state: Any) -> list[str]:
    """Restore a checkpoint's torch, CUDA and augmentation generator states; returns what is not bitwise restored:
    a stream of another device type (``gen`` reseeded from its seed and the step), CUDA states of more GPUs."""
    notes: list[str] = []
    written_on = state.get("aug_generator_device", gen.device.type)

    def cpu_bytes(t: Any) -> torch.Tensor:
        return torch.as_tensor(t).detach().to("cpu", torch.uint8)

    if written_on == gen.device.type:
        gen.set_state(cpu_bytes(gen_state))
    else:
        gen.manual_seed(gen.initial_seed() + 1_000_003 * int(state.get("step") or 0))
        notes.append(f"augmentation stream written on {written_on}, reseeded on {gen.device.type}")
    torch.set_rng_state(cpu_bytes(state["torch_rng"]))
    cuda = state.get("cuda_rng")
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(cpu_bytes(cuda[i]), i)
        if n < len(cuda):
            notes.append(f"CUDA RNG states of {len(cuda)} GPUs, {n} restored")
    return notes
