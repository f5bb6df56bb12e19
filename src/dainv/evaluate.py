"""Evaluation of trained networks (docs/method.md §6): a run or checkpoint, a run's kept checkpoints, or a plain
``state_dict``. The measurement is :mod:`dainv.measure`'s, the folders :mod:`dainv.evalfolders`'."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dainv import __version__, checkpoint, runio
from dainv.checkpoint import build_from_checkpoint
from dainv.config import RunConfig, from_dict
from dainv.data import Dataset, images_to_float, load_configured, load_dataset
from dainv.errors import RunError
from dainv.evalfolders import (
    EvaluationInterrupted,
    check_eval_target,
    eval_status,
    kept_checkpoints,
    no_kept_checkpoint,
    protocol_difference,
    read_eval_folder,
    write_eval_folder,
)
from dainv.measure import Protocol, measure, measured_layers, summarise
from dainv.models import build_model, probe
from dainv.runtime import resolve_device, resolve_precision

__all__ = ["EvalResult", "evaluate", "evaluate_kept", "evaluate_weights"]


@dataclass
class EvalResult:
    """What an evaluation measured. ``result["key"]`` reads ``summary`` (``"_scores"``: the scores)."""

    summary: dict[str, Any]  # the content of summary.json
    scores: dict[str, np.ndarray]  # {layer: (N, T) float32} Eq. 2 scores, NaN where undefined
    per_transform: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # {transformation: scores}
    out_dir: Path | None = None  # the evaluation folder written

    def __getitem__(self, key: str) -> Any:
        return self.scores if key == "_scores" else self.summary[key]

    def __contains__(self, key: str) -> bool:
        return key == "_scores" or key in self.summary

    def get(self, key: str, default: Any = None) -> Any:
        return self.scores if key == "_scores" else self.summary.get(key, default)


@dataclass
class _Measurement:
    """The network on its device, the test images (cut to ``n_test``), protocol and precision."""

    model: nn.Module
    data: Dataset
    proto: Protocol
    device: torch.device
    precision: str

    def entry(self) -> dict[str, Any]:
        """``summary.json``'s ``protocol``: what was measured, on which test images."""
        return {**self.proto.record(), "layers": measured_layers(self.model, self.proto), "precision": self.precision,
                "data": self.data.name, "n_test": len(self.data.y_test), "test_digest": self.data.digest("test")}  # fmt: skip


def _score(m: _Measurement, desc: str, quiet: bool) -> EvalResult:
    x_test, y_test = m.data.x_test.to(m.device), m.data.y_test.to(m.device)
    scores, per_t, accuracy, wall = measure(m.model, x_test, y_test, m.proto, m.device, m.precision, desc=desc, quiet=quiet)
    summary: dict[str, Any] = {
        "accuracy": accuracy,
        "invariance": {"layers": list(scores), "n_images": x_test.shape[0], "n_transforms": m.proto.transforms,
                       **summarise(scores)},
        "protocol": m.entry(), "wall_time_s": wall, "environment": runio.environment(m.device),
    }  # fmt: skip
    if per_t:
        summary["per_transform"] = {k: summarise(v)["median"] for k, v in per_t.items()}
    return EvalResult(summary, scores, per_t)


def _copied(prior: Path, sha256: str, m: _Measurement) -> EvalResult | None:
    """The measurement in ``prior`` if it scored a file of the same SHA-256 the same way (protocol,
    layers, precision, test images, this dainv, per-transformation scores if asked); else ``None``."""
    found = read_eval_folder(prior)
    if found is None:
        return None
    summary, scores, per_t = found
    same = (
        isinstance(summary.get("checkpoint"), dict)
        and summary["checkpoint"].get("sha256") == sha256
        and summary.get("protocol") == json.loads(json.dumps(m.entry()))
        and isinstance(summary.get("environment"), dict)
        and summary["environment"].get("dainv") == __version__
        and (bool(per_t) or not m.proto.per_transform)
    )
    if not same:
        return None
    kept = ("accuracy", "invariance", "protocol", "wall_time_s", "environment") + (("per_transform",) if m.proto.per_transform else ())
    measured = {k: summary[k] for k in kept if k in summary}
    return EvalResult({**measured, "copied_from": str(prior)}, scores, per_t if m.proto.per_transform else {})


def _run(m: _Measurement, head: dict[str, Any], out: Path, *, write: bool, quiet: bool, reuse: Path | None = None) -> EvalResult:
    """Measure (or copy from ``reuse``) and write ``out``; on Ctrl-C nothing is written."""
    if write:
        check_eval_target(out)
    try:
        result = _copied(reuse, head["checkpoint"]["sha256"], m) if reuse is not None else None
        if result is None:
            result = _score(m, f"evaluate {Path(head['checkpoint']['path']).name}", quiet)
        result.summary = {**head, **result.summary}
        if write:
            result.out_dir = write_eval_folder(out, result.summary, result.scores, result.per_transform)
            if not quiet:
                print(f"wrote {result.out_dir} (summary.json, scores.npz)", file=sys.stderr)
    except KeyboardInterrupt:
        raise EvaluationInterrupted(out) from None
    return result


def _probe(net: nn.Module, ds: Dataset, dev: torch.device, layers: Sequence[str] | None, name: str) -> None:
    """Refuse a network that does not fit the data set before measuring."""
    try:
        probe(net, images_to_float(ds.x_test[:2]).to(dev), ds.num_classes, list(layers or net.tap_names), name)
    except ValueError as e:
        raise RunError(str(e)) from None


def _say_notes(ds: Dataset, quiet: bool) -> Dataset:
    """``ds``, after saying its notes (files skipped, the cache) unless ``quiet``."""
    for note in () if quiet else ds.notes:
        print(f"data: {note}", file=sys.stderr)
    return ds


@dataclass
class _Source:
    """A checkpoint to score: its state, file, content hash, run folder and run config."""

    state: dict[str, Any]
    path: Path
    sha256: str
    run_dir: Path | None
    cfg: RunConfig | None

    @classmethod
    def load(cls, source: Path, kept: str | None) -> _Source:
        if kept is not None:
            name = kept.removesuffix(".pt")
            if not (source / "checkpoints" / f"{name}.pt").is_file():
                raise no_kept_checkpoint(source, name)
            source = source / "checkpoints" / f"{name}.pt"
        ck = checkpoint.checkpoint_path(source)
        for _ in range(3):  # a training run may replace the file while it is read: read a stable one
            digest = checkpoint.file_digest(ck)
            state = checkpoint.load_checkpoint(ck)
            if checkpoint.file_digest(ck) == digest:
                break
        run_dir = source if source.is_dir() else None
        if run_dir is None and ck.parent.name == "checkpoints" and runio.is_run_dir(ck.parent.parent):
            run_dir = ck.parent.parent
        cfg = from_dict(state["config"]) if isinstance(state.get("config"), dict) else None
        return cls(state, ck, digest, run_dir, cfg)

    def head(self, source: Path, kept: str | None) -> dict[str, Any]:
        """The summary's head: which checkpoint was scored, whether its run finished (said if not final)."""
        epoch, planned = self.state.get("epoch"), self.cfg.train.epochs if self.cfg is not None else None
        final = self.path.name == "final.pt" or planned is None or (epoch is not None and epoch >= planned)
        rec = {"path": str(self.path), "epoch": epoch, "step": self.state.get("step"), "sha256": self.sha256,
               "final": bool(final)}  # fmt: skip
        meta = runio.read_meta(self.run_dir, strict=False) if self.run_dir is not None else {}
        finished = meta.get("status") == "finished" if self.run_dir is not None else rec["final"]
        if kept is None and (not rec["final"] or finished is False):
            print(f"{self.path}: epoch {epoch} of {planned} — not the final model", file=sys.stderr)
        head = {"source": str(source), "checkpoint": rec, "run_finished": finished, "epochs_planned": planned}
        if meta.get("run_id"):
            head["run_id"] = meta["run_id"]  # which run of the folder: a --force restart is another
        return head

    def data(self, data: Dataset | str | None, dataset: str | None, root: str | None, *, image_size: int | None,
             skip_bad: bool | None, quiet: bool, download: bool | None) -> Dataset:  # fmt: skip
        """``data``, else ``dataset`` or the run's; refused if the network cannot take its images."""
        if isinstance(data, str):
            data, dataset = None, data
        if data is None:
            if dataset is None and self.cfg is None:
                raise RunError(
                    f"checkpoint {self.path} carries no run config, so its data set is unknown; "
                    "name it with --data (e.g. --data cifar10 or --data npz:FILE)"
                )
            changes = {k: v for k, v in (("image_size", image_size), ("skip_bad", skip_bad)) if v is not None}
            data_cfg = dataclasses.replace((self.cfg or RunConfig()).data, **changes)
            data = _say_notes(load_configured(data_cfg, dataset, root, download), quiet)
        info = self.state["model_info"]
        if data.num_classes != info["num_classes"]:
            raise RunError(
                f"the checkpoint {self.path} predicts {info['num_classes']} classes but the data set "
                f"{data.name} has {data.num_classes}; evaluate it on the data set it was trained on"
            )
        if data.image_shape[0] != info.get("in_channels", 3):
            raise RunError(f"the checkpoint expects {info['in_channels']}-channel images, {data.name} has {data.image_shape[0]}")
        return data


def _default_out(source: Path, ck: Path, scheme: str | None = None) -> Path:
    """``RUN/eval`` or ``RUN/eval-epoch-NNNN`` (``FILE-eval`` outside a run), ``+SCHEME`` for another scheme."""
    tail = f"+{scheme}" if scheme else ""
    if ck.parent.name == "checkpoints" and (source.is_dir() or source == ck):
        return ck.parent.parent / ((f"eval-{ck.stem}" if ck.stem.startswith("epoch-") else "eval") + tail)
    return ck.parent / f"{ck.stem}-eval{tail}"


def evaluate(
    source: Path, out_dir: Path | None = None, *, data: Dataset | str | None = None, data_root: str | None = None,
    dataset: str | None = None, device: str | None = None, per_transform: bool | None = None,
    n_test: int | None = None, seed: int | None = None, quiet: bool = False, write: bool = True,
    checkpoint: str | None = None, layers: list[str] | None = None, reuse: Path | None = None,
    scheme: str | None = None, normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    image_size: int | None = None, skip_bad: bool | None = None, download: bool | None = None,
) -> EvalResult:  # fmt: skip
    """Evaluate a run folder (its ``final.pt``, else ``last.pt``) or checkpoint file into an evaluation folder
    (default ``RUN/eval``, ``RUN/eval-epoch-NNNN`` for the kept ``checkpoint``, ``FILE-eval`` outside a run;
    ``eval+SCHEME`` for another ``scheme`` than the run's). Settings left ``None`` are the run's. ``reuse``:
    an evaluation folder whose measurement is copied if it scored a file of the same SHA-256 the same way."""
    source = Path(source)
    src = _Source.load(source, checkpoint)
    cfg = src.cfg or RunConfig()
    dev = resolve_device(device or "auto")
    proto = Protocol.from_config(cfg, seed=seed, per_transform=per_transform, layers=layers, scheme=scheme, normalize=normalize)
    model = build_from_checkpoint(src.state, dev)  # `checkpoint` is the argument here
    ds = src.data(data, dataset, data_root, image_size=image_size, skip_bad=skip_bad, quiet=quiet, download=download)
    _probe(model, ds, dev, measured_layers(model, proto), f"the network of {src.path}")
    if n_test is None and src.cfg is not None:
        n_test = cfg.data.n_test
    m = _Measurement(model, ds.subset(None, n_test), proto, dev, resolve_precision(cfg.train.precision, dev))
    head = src.head(source, checkpoint)
    other = None if proto.scheme == Protocol.from_config(cfg).scheme else proto.scheme  # folder eval+SCHEME
    out = Path(out_dir) if out_dir is not None else _default_out(source, src.path, other)
    result = _run(m, head, out, write=write, quiet=quiet, reuse=reuse)
    own_folder = out.name == "eval" or out.name.startswith(("eval+", "eval-epoch-"))
    in_run = write and src.run_dir is not None and out.parent == src.run_dir and own_folder
    if in_run and (diff := protocol_difference(src.run_dir, out)):  # not taken as the run's evaluation
        print(f"note: {out} was evaluated with another protocol than the run's own ({'; '.join(diff)}); "
              "`dainv reproduce` evaluates the run again there and the report flags it as not the run's "
              "evaluation (docs/reliability.md). To keep it apart, use --out DIR", file=sys.stderr)  # fmt: skip
    return result


def evaluate_kept(run_dir: Path, redo: bool = False, scheme: str | None = None, **kwargs: Any) -> list[EvalResult]:
    """Evaluate each kept ``checkpoints/epoch-NNNN.pt`` into ``RUN/eval-epoch-NNNN/``, skipping current ones
    unless ``redo``; returns the new results. The final model's file reuses ``RUN/eval/``'s scores."""
    run_dir = Path(run_dir)
    tail = f"+{scheme}" if scheme else ""
    out = []
    for name in kept_checkpoints(run_dir):
        if redo or eval_status(run_dir, run_dir / f"eval-{name}{tail}") != "current":
            reuse = None if redo else run_dir / f"eval{tail}"
            out.append(evaluate(run_dir, checkpoint=name, reuse=reuse, scheme=scheme, **kwargs))
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = checkpoint.safe_load(path)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; give the file of a saved state_dict") from None
    except RunError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        lines = str(e).strip().splitlines()
        raise RunError(
            f"cannot read weights {path}: {lines[0] if lines else type(e).__name__}; save them "
            "again with torch.save(net.state_dict(), FILE)"
        ) from None
    if isinstance(sd, dict):
        sd = sd.get("model", sd.get("state_dict", sd))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RunError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    for prefix in ("module.", "_orig_mod."):  # saved from DDP or torch.compile
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def evaluate_weights(
    model: str | Callable[..., nn.Module], weights: str | Path, data: str | Dataset, layers: list[str] | None = None,
    *, out: str | Path | None = None, device: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
    data_root: str | None = None, n_test: int | None = None, seed: int | None = None,
    per_transform: bool | None = None, quiet: bool = False, write: bool = True, precision: str = "fp32",
    normalize: tuple[Sequence[float], Sequence[float]] | None = None, image_size: int | None = None,
    skip_bad: bool = False, download: bool | None = None,
) -> EvalResult:  # fmt: skip
    """The paper's measurement of a plain ``state_dict`` in ``weights`` (``out``: ``WEIGHTS-eval``); ``model``:
    a registered name, ``module.path:factory`` or a factory, called as ``factory(num_classes=N, **model_kwargs)``."""
    weights = Path(weights)
    dev = resolve_device(device or "auto")
    proto = Protocol.from_config(RunConfig(), seed=seed, layers=layers, per_transform=per_transform, normalize=normalize)
    if isinstance(data, str):
        data = _say_notes(load_dataset(data, data_root, download, image_size=image_size, skip_bad=bool(skip_bad)), quiet)
    sd = _read_weights(weights)
    name, kwargs = model if isinstance(model, str) else getattr(model, "__qualname__", repr(model)), dict(model_kwargs or {})
    try:
        net = build_model(model, data.num_classes, data.image_shape[0], layers, **kwargs)
    except ValueError as e:
        raise RunError(str(e)) from None
    checkpoint.load_weights(
        net, sd, f"the weights in {weights} do not fit model {name!r} {kwargs}",
        "build the model as it was trained (its constructor arguments: --model-kwargs, model_kwargs=)",
    )  # fmt: skip
    checkpoint.check_finite(sd, weights)
    net = net.to(dev).eval()
    _probe(net, data, dev, layers, f"model {name!r}")
    rec = {"path": str(weights), "epoch": None, "step": None, "sha256": checkpoint.file_digest(weights), "final": True}
    head = {"source": str(weights), "model": name, "checkpoint": rec, "run_finished": None}
    out_dir = Path(out) if out is not None else weights.parent / f"{weights.stem}-eval"
    return _run(_Measurement(net, data.subset(None, n_test), proto, dev, precision), head, out_dir, write=write, quiet=quiet)
