"""Evaluation of a trained network (docs/method.md §6): accuracy and per-layer invariance (Eq. 2).

* accuracy on the test set: single view, and the mean softmax over 10 ``light`` views;
* invariance scores at every tapped layer (from ``input``, pixel space) for every test image
  under ``T`` = 5 ``heavier_eval`` transformations, BN in eval mode, streamed (memory bounded
  by the batch, never N×D);
* optionally (``per_transform``) the same scores for each transformation type alone.

The measurement is one value, :class:`Protocol` (scheme, transformations per image, layers,
interpolation, seed …). The reference pass runs the originals once (Eq. 2's denominator sums,
and the accuracy pass on the same logits); the transformation pass runs each batch of originals
again with its T transformations. Scores stay on the device until the end: one copy to the host.

Entry points: :func:`evaluate` (a run folder or dainv checkpoint → ``RUN/eval/``),
:func:`evaluate_kept` (the kept ``epoch-NNNN.pt`` checkpoints → ``RUN/eval-epoch-NNNN/``),
:func:`evaluate_weights` (a plain ``state_dict`` of a named model), :func:`invariance_profile`
(any tapped network and images, from Python) and :func:`eval_status` (is an evaluation folder
current, stale or missing). An evaluation folder is written atomically (see :mod:`dainv.evalio`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dainv import checkpoint, runio
from dainv.augment import SCHEMES, TRANSFORMS, Scheme, apply, get_scheme, sample_params
from dainv.config import RunConfig, from_dict
from dainv.data import Dataset, images_to_float, load_dataset
from dainv.errors import RunError
from dainv.evalio import (
    EvaluationInterrupted,
    check_eval_target,
    eval_status,
    kept_checkpoints,
    read_meta,
    write_eval_folder,
)
from dainv.runtime import autocast, resolve_device, resolve_precision

__all__ = [
    "Protocol",
    "EvalResult",
    "evaluate",
    "evaluate_kept",
    "evaluate_weights",
    "invariance_profile",
    "eval_status",
    "load_checkpoint",
    "per_transform_schemes",
    "summarise",
    "format_summary",
    "EvaluationInterrupted",
]

#: Eq. 2's denominator within this many float32 ulps of the layer's mean second moment is
#: rounding noise of ``‖a‖² − 2a·ā + mean‖a‖²``: the score is undefined (NaN), not ±huge.
_ULPS = 64


@dataclass(frozen=True)
class Protocol:
    """What is measured: the evaluation protocol as one value (docs/method.md §6).

    Args:
        scheme: transformation scheme of Eq. 2's ``G`` (``heavier_eval``).
        transforms: transformations per test image (T).
        layers: tap names to score, in layer order; ``None``: all of the model's ``tap_names``.
        interpolation: ``bilinear`` (the authors' pipeline) or ``nearest``.
        seed: seed of the sampled transformations and of the light TTA views.
        tta_views: light views of the mean-softmax accuracy.
        batch_size: images per forward pass (the transformation pass uses ``B // (T + 1)``
            originals with their T views).
        per_transform: also score each transformation type alone.
    """

    scheme: str = "heavier_eval"
    transforms: int = 5
    layers: tuple[str, ...] | None = None
    interpolation: str = "bilinear"
    seed: int = 0
    tta_views: int = 10
    batch_size: int = 500
    per_transform: bool = False

    @classmethod
    def from_config(cls, cfg: RunConfig, **changes: Any) -> Protocol:
        """The protocol of a run's config; ``changes`` that are not ``None`` replace settings."""
        ec = cfg.eval
        scheme = ec.scheme
        if cfg.method.protocol == "authors_code" and scheme == "heavier_eval":
            scheme = "heavier_eval_authors"  # the authors' contrast range (docs/method.md)
        base = cls(scheme, ec.transforms, None, cfg.augment.interpolation, ec.seed,
                   ec.tta_views, ec.batch_size, ec.per_transform)  # fmt: skip
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("layers") is not None:
            changes["layers"] = tuple(changes["layers"])
        return dataclasses.replace(base, **changes)

    def schemes(self) -> dict[str, Scheme]:
        """``{"all": the scheme}``, plus one per transformation type with ``per_transform``."""
        main = get_scheme(self.scheme)
        out = {"all": main}
        if self.per_transform:
            out.update(per_transform_schemes(main))
        return out

    def record(self) -> dict[str, Any]:
        """The ``protocol`` entry of ``summary.json`` (without the run-specific fields)."""
        return {
            "scheme": self.scheme,
            "scheme_params": dataclasses.asdict(get_scheme(self.scheme)),
            "transforms_per_image": self.transforms,
            "tta_views": self.tta_views,
            "interpolation": self.interpolation,
            "bn": "eval",
            "seed": self.seed,
        }


@dataclass
class EvalResult:
    """What an evaluation measured. ``result["key"]`` reads ``summary`` (``"_scores"``: the scores).

    Attributes:
        summary: the content of ``summary.json``.
        scores: ``{layer: (N, T) float32}`` Eq. 2 scores (NaN where undefined).
        per_transform: ``{transformation: {layer: (N, T)}}`` with ``per_transform``.
        out_dir: the evaluation folder written, or ``None``.
    """

    summary: dict[str, Any]
    scores: dict[str, np.ndarray]
    per_transform: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    out_dir: Path | None = None

    def __getitem__(self, key: str) -> Any:
        return self.scores if key == "_scores" else self.summary[key]

    def __contains__(self, key: str) -> bool:
        return key == "_scores" or key in self.summary

    def get(self, key: str, default: Any = None) -> Any:
        return self.scores if key == "_scores" else self.summary.get(key, default)


def load_checkpoint(path: Path, device: torch.device) -> tuple[nn.Module, RunConfig, dict[str, Any]]:
    """Model (eval mode, on ``device``), its run config and the checkpoint's model info."""
    state = checkpoint.load_checkpoint(path)
    cfg = from_dict(state["config"]) if state.get("config") is not None else RunConfig()
    return checkpoint.build_from_checkpoint(state, device), cfg, state["model_info"]


def per_transform_schemes(base: Scheme) -> dict[str, Scheme]:
    """One scheme per transformation type; the flip is always applied (else half the scores are 1)."""
    out = {}
    for t in TRANSFORMS:
        s = base.only(t)
        if t == "flip":
            s = dataclasses.replace(s, flip=1.0)
        out[t] = s
    return out


def summarise(scores: Mapping[str, np.ndarray]) -> dict[str, dict[str, float | None]]:
    """Median, quartiles, mean and whisker ends (1.5 IQR) per layer, over the finite scores.

    Scores are undefined (NaN) where Eq. 2's denominator is 0 (one test image, or all test
    images identical at that layer); they are left out and counted in ``n_undefined``. A layer
    with no finite score gets ``None`` for every statistic ("undefined").
    """
    keys = ("median", "q1", "q3", "mean", "whislo", "whishi")
    out: dict[str, dict[str, Any]] = {k: {} for k in (*keys, "n_undefined")}
    for layer, s in scores.items():
        v = np.asarray(s).reshape(-1).astype(np.float64)
        finite = np.isfinite(v)
        out["n_undefined"][layer] = int(v.size - finite.sum())
        v = v[finite]
        if v.size == 0:
            for k in keys:
                out[k][layer] = None
            continue
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        stats = (med, q1, q3, v.mean(), v[v >= q1 - 1.5 * iqr].min(), v[v <= q3 + 1.5 * iqr].max())
        for k, x in zip(keys, stats):
            out[k][layer] = float(x)
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """The lines ``dainv evaluate`` prints: accuracy and the median invariance per layer."""
    inv, acc = summary["invariance"], summary.get("accuracy") or {}
    lines = []
    if acc:
        lines.append("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
    med = inv["median"]
    lines.append("median invariance per layer (docs/method.md, Eq. 2):")
    lines.append("  " + " ".join(f"{k:>9}" for k in inv["layers"]))
    lines.append("  " + " ".join(f"{med[k]:9.3f}" if med[k] is not None else f"{'undefined':>9}" for k in inv["layers"]))
    if any(med[k] is None for k in inv["layers"]):
        lines.append(
            "undefined: Eq. 2's denominator is 0 there (a single test image, or identical test "
            "images); evaluate on at least 2 different images"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The measurement


def _flat(a: torch.Tensor) -> torch.Tensor:
    a = a.reshape(a.shape[0], -1)
    return a if a.dtype in (torch.float32, torch.float64) else a.float()


class _Scores:
    """Eq. 2 streamed over a test set for many layers, kept on the device.

    The arithmetic of :class:`dainv.invariance.InvarianceMeter` (float32 batch sums, float64
    running totals; the same numbers bit for bit) without its per-batch host copies: the
    per-image numerators and denominators stay where the activations are, and :meth:`compute`
    copies every layer's scores to the host at once.
    """

    def __init__(self, layers: tuple[str, ...]) -> None:
        self.layers = layers
        self.sum: dict[str, torch.Tensor] = {}
        self.sumsq: dict[str, torch.Tensor] = {}
        self.n = 0
        self.num: dict[str, list[torch.Tensor]] = {k: [] for k in layers}
        self.den: dict[str, list[torch.Tensor]] = {k: [] for k in layers}

    def update_reference(self, acts: Mapping[str, torch.Tensor]) -> None:
        for k in self.layers:
            x = _flat(acts[k])
            s, q = x.sum(0).double(), x.pow(2).sum().double()
            if k in self.sum:
                self.sum[k] += s
                self.sumsq[k] += q
            else:
                self.sum[k], self.sumsq[k] = s, q
        self.n += x.shape[0]

    def update(self, acts: Mapping[str, torch.Tensor], trans: Mapping[str, torch.Tensor]) -> None:
        for k in self.layers:
            x = _flat(acts[k])
            t = trans[k].reshape(x.shape[0], -1, x.shape[1])
            t = t if t.dtype == x.dtype else t.to(x.dtype)
            self.num[k].append((t - x[:, None, :]).pow(2).mean(2).double())
            mean_vec = (self.sum[k] / self.n).to(x.dtype)
            sq = x.pow(2).sum(1).double()
            cross = (x @ mean_vec).double()
            self.den[k].append((sq - 2 * cross + self.sumsq[k] / self.n) / x.shape[1])

    def compute(self) -> dict[str, np.ndarray]:
        rows = []
        for k in self.layers:
            num, den = torch.cat(self.num[k]), torch.cat(self.den[k])
            d = self.sum[k].numel()
            floor = _ULPS * torch.finfo(torch.float32).eps * self.sumsq[k] / (self.n * d)
            den = torch.where(den > floor, den, torch.full_like(den, float("nan")))
            rows.append((1.0 - num / den[:, None]).float())
        host = torch.stack(rows).cpu().numpy()  # the one device → host copy
        return {k: host[i] for i, k in enumerate(self.layers)}


class _Runner:
    def __init__(self, model: nn.Module, device: torch.device, precision: str, taps: list[str]) -> None:
        self.model, self.device, self.precision, self.taps = model, device, precision, taps

    def __call__(self, x: torch.Tensor, taps: bool = True):
        with autocast(self.device, self.precision):
            return self.model(x, taps=self.taps) if taps else self.model(x)


class _Accuracy:
    """The accuracy pass: single view (on the reference pass's logits) and light-view TTA."""

    def __init__(self, run: _Runner, proto: Protocol) -> None:
        dev = run.device
        self.run, self.proto = run, proto
        self.gen = torch.Generator(device=dev).manual_seed(proto.seed * 31 + 1)
        self.single = torch.zeros((), dtype=torch.long, device=dev)
        self.tta = torch.zeros((), dtype=torch.long, device=dev)

    def update(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, bar: Any) -> None:
        self.single += (logits.argmax(1) == y).sum()
        probs = torch.zeros(x.shape[0], logits.shape[1], device=x.device)
        for _ in range(self.proto.tta_views):
            params = sample_params(SCHEMES["light"], x.shape[0], self.gen, x.device)
            xv = apply(x, params, self.proto.interpolation)
            probs += torch.softmax(self.run(xv, taps=False).float(), dim=1)
            _tick(bar)
        self.tta += (probs.argmax(1) == y).sum()

    def result(self, n: int) -> dict[str, float]:
        v = self.proto.tta_views
        return {"single_view": self.single.item() / n, f"light_tta{v}": self.tta.item() / n}


def _tick(bar: Any) -> None:
    if bar is not None:
        bar.update(1)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return images_to_float(x) if x.dtype == torch.uint8 else x.float()


def _reference_pass(run, x_test, y_test, proto, meters, acc, bar) -> None:
    """Pass 1: Eq. 2's reference sums of the originals (and the accuracy on the same logits)."""
    bs = proto.batch_size
    for i in range(0, x_test.shape[0], bs):
        x = _as_float(x_test[i : i + bs])
        logits, acts = run(x)
        for m in meters.values():
            m.update_reference(acts)
        del acts
        if acc is not None:
            acc.update(x, y_test[i : i + bs], logits, bar)
        _tick(bar)


def _transform_pass(run, x_test, proto, schemes, meters, bar) -> None:
    """Pass 2: per-image numerators of Eq. 2 under each scheme (parameters seeded per scheme)."""
    t_count, dev = proto.transforms, run.device
    bs2 = max(1, proto.batch_size // (t_count + 1))  # originals + T views in one forward
    gens = {k: torch.Generator(device=dev).manual_seed(proto.seed * 1009 + j) for j, k in enumerate(schemes)}
    for i in range(0, x_test.shape[0], bs2):
        x = _as_float(x_test[i : i + bs2])
        b = x.shape[0]
        for k, scheme in schemes.items():
            xt = x.repeat_interleave(t_count, 0)
            xt = apply(xt, sample_params(scheme, xt.shape[0], gens[k], dev), proto.interpolation)
            _, acts = run(torch.cat([x, xt]))
            orig = {name: a[:b] for name, a in acts.items()}
            trans = {name: a[b:].reshape(b, t_count, *a.shape[1:]) for name, a in acts.items()}
            meters[k].update(orig, trans)
            del acts, orig, trans
            _tick(bar)


def _layers(model: nn.Module, proto: Protocol) -> list[str]:
    if proto.layers is None:
        return list(model.tap_names)
    if not hasattr(model, "check_taps"):
        return list(proto.layers)
    try:
        return list(model.check_taps(list(proto.layers)))
    except ValueError as e:
        raise RunError(f"invalid --layers: {e}") from None


@torch.no_grad()
def _measure(model, x_test, y_test, proto, device, precision, desc="evaluate", quiet=True):
    """Both passes over ``x_test``; returns (scores, per-transform scores, accuracy, seconds)."""
    run = _Runner(model, device, precision, _layers(model, proto))
    schemes = proto.schemes()
    meters = {k: _Scores(tuple(run.taps)) for k in schemes}
    acc = _Accuracy(run, proto) if y_test is not None else None
    n = x_test.shape[0]
    n1, n2 = -(-n // proto.batch_size), -(-n // max(1, proto.batch_size // (proto.transforms + 1)))
    total = n1 * (1 + (proto.tta_views if acc else 0)) + n2 * len(schemes)
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="batch", desc=desc, dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        _reference_pass(run, x_test, y_test, proto, meters, acc, bar)
        _transform_pass(run, x_test, proto, schemes, meters, bar)
    finally:
        if bar is not None:
            bar.close()
    scores = meters.pop("all").compute()
    per_t = {k: m.compute() for k, m in meters.items()}
    accuracy = acc.result(n) if acc is not None else None
    return scores, per_t, accuracy, time.perf_counter() - t0


def invariance_profile(
    net: nn.Module,
    images: torch.Tensor,
    scheme: str = "heavier_eval",
    transforms: int = 5,
    layers: list[str] | None = None,
    *,
    interpolation: str = "bilinear",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> dict[str, np.ndarray]:
    """Eq. 2 per layer for any tapped network: the paper's measurement from Python.

    Args:
        net: a model with the tap protocol (``tap_names``, ``forward(x, taps=[...])``); wrap a
            plain module with ``dainv.models.tapped(module, layers)``. Put in eval mode here.
        images: (N, C, H, W) test images, uint8 or float in [0, 1]; N >= 2.
        scheme: transformation scheme (docs/method.md §4), ``heavier_eval`` by default.
        transforms: transformations per image (T).
        layers: tap names to score; ``None``: all of ``net.tap_names``.
        interpolation, seed, batch_size: as in :class:`Protocol`.
        device: where to run (default: where ``net``'s parameters are).
        precision: ``fp32`` or ``bf16``.

    Returns:
        ``{layer: (N, T) float32 scores}`` in layer order; NaN where Eq. 2 is undefined.
    """
    if device is None:
        p = next(net.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = resolve_device(str(device))
    proto = Protocol(scheme, transforms, tuple(layers) if layers else None, interpolation, seed,
                     0, batch_size, False)  # fmt: skip
    was_training = net.training
    net.eval()
    try:
        scores, _, _, _ = _measure(net.to(dev), images.to(dev), None, proto, dev, precision)
    finally:
        net.train(was_training)
    return scores


# ---------------------------------------------------------------------------------------------
# Evaluating checkpoints


@dataclass
class _Source:
    """A checkpoint to score: its state, file, content hash and the run folder it belongs to."""

    state: dict[str, Any]
    path: Path
    sha256: str
    run_dir: Path | None
    cfg: RunConfig | None

    def record(self) -> dict[str, Any]:
        epoch, planned = self.state.get("epoch"), self.planned
        final = self.path.name == "final.pt" or planned is None or (epoch is not None and epoch >= planned)
        return {"path": str(self.path), "epoch": epoch, "step": self.state.get("step"),
                "sha256": self.sha256, "final": bool(final)}  # fmt: skip

    @property
    def planned(self) -> int | None:
        return self.cfg.train.epochs if self.cfg is not None else None

    def run_finished(self) -> bool | None:
        if self.run_dir is None:
            return self.record()["final"]
        return read_meta(self.run_dir).get("status") == "finished"


def _load_source(source: Path, kept: str | None = None) -> _Source:
    source = Path(source)
    if kept is not None:
        name = kept if kept.endswith(".pt") else f"{kept}.pt"
        source = source / "checkpoints" / name
        if not source.is_file():
            raise RunError(f"{source} does not exist; kept checkpoints: {kept_checkpoints(source.parent.parent) or 'none'}")
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
    return _Source(state, ck, digest, run_dir, cfg)


def _resolve_data(src: _Source, data, dataset, data_root) -> Dataset:
    if isinstance(data, str):
        data, dataset = None, data
    if data is not None:
        return data
    if dataset is None and src.cfg is None:
        raise RunError(
            f"checkpoint {src.path} carries no run config, so its data set is unknown; "
            "name it with --data (e.g. --data cifar10 or --data npz:FILE)"
        )
    cfg = src.cfg or RunConfig()
    return load_dataset(dataset or cfg.data.dataset, data_root or cfg.data.root)


def _check_fits(data: Dataset, info: Mapping[str, Any], what: Path) -> None:
    if data.num_classes != info["num_classes"]:
        raise RunError(
            f"the checkpoint {what} predicts {info['num_classes']} classes but the data set "
            f"{data.name} has {data.num_classes}; evaluate it on the data set it was trained on"
        )
    if data.image_shape[0] != info.get("in_channels", 3):
        raise RunError(
            f"the checkpoint expects {info['in_channels']}-channel images, {data.name} has {data.image_shape[0]}"
        )


def _default_out(source: Path, ck: Path) -> Path:
    if ck.parent.name == "checkpoints" and (source.is_dir() or source == ck):
        run = ck.parent.parent
        return run / (f"eval-{ck.stem}" if ck.stem.startswith("epoch-") else "eval")
    return ck.parent / f"{ck.stem}-eval"


def _score(model, data, proto, dev, precision, n_test, desc, quiet) -> tuple[EvalResult, int]:
    data = data.subset(None, n_test)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    scores, per_t, accuracy, wall = _measure(model, x_test, y_test, proto, dev, precision, desc, quiet)
    stats = summarise(scores)
    layers = list(scores)
    summary: dict[str, Any] = {
        "accuracy": accuracy,
        "invariance": {"layers": layers, "n_images": x_test.shape[0], "n_transforms": proto.transforms, **stats},
        "protocol": {**proto.record(), "layers": layers, "precision": precision, "data": data.name,
                     "n_test": x_test.shape[0]},  # fmt: skip
        "wall_time_s": wall,
        "environment": runio.environment(dev),
    }
    if per_t:
        summary["per_transform"] = {k: summarise(v)["median"] for k, v in per_t.items()}
    return EvalResult(summary, scores, per_t), x_test.shape[0]


def _finish(result: EvalResult, out: Path | None, write: bool, quiet: bool) -> EvalResult:
    if not write:
        return result
    result.out_dir = write_eval_folder(out, result.summary, result.scores, result.per_transform)
    if not quiet:
        print(f"wrote {result.out_dir} (summary.json, scores.npz)", file=sys.stderr)
    return result


def evaluate(
    source: Path,
    out_dir: Path | None = None,
    data: Dataset | str | None = None,
    data_root: str | None = None,
    dataset: str | None = None,
    device: str | None = None,
    per_transform: bool | None = None,
    n_test: int | None = None,
    seed: int | None = None,
    quiet: bool = False,
    write: bool = True,
    *,
    checkpoint: str | None = None,
    layers: list[str] | None = None,
) -> EvalResult:
    """Evaluate a run folder or dainv checkpoint into an evaluation folder (written atomically).

    Args:
        source: a run folder (its ``final.pt``, else ``last.pt``) or a checkpoint file.
        out_dir: the evaluation folder; default ``RUN/eval`` (``RUN/eval-epoch-NNNN`` for a
            kept checkpoint, ``FILE-eval`` beside a checkpoint outside a run).
        data: a loaded :class:`~dainv.data.Dataset`, or a data set spec (as ``dataset``).
        data_root, dataset: where and which data set (default: the run's); a checkpoint
            without a run config needs ``dataset``.
        device, per_transform, n_test, seed, layers: override the run's evaluation settings.
        quiet: no progress bar and no messages.
        write: write the folder (``False``: only return the result).
        checkpoint: a kept checkpoint of the run folder ``source``, e.g. ``"epoch-0010"``.

    Returns:
        An :class:`EvalResult`; ``summary["checkpoint"]`` says which checkpoint was scored.
    """
    src = _load_source(Path(source), checkpoint)
    dev = resolve_device(device or "auto")
    cfg = src.cfg or RunConfig()
    model = _build(src.state, dev)
    ds = _resolve_data(src, data, dataset, data_root)
    _check_fits(ds, src.state["model_info"], src.path)
    proto = Protocol.from_config(cfg, seed=seed, per_transform=per_transform, layers=layers)
    precision = resolve_precision(cfg.train.precision, dev)
    n_test = n_test if n_test is not None else (cfg.data.n_test if src.cfg is not None else None)
    rec, finished = src.record(), src.run_finished()
    if not rec["final"] or finished is False:
        print(f"{src.path}: epoch {rec['epoch']} of {src.planned} — not the final model", file=sys.stderr)
    out = Path(out_dir) if out_dir is not None else _default_out(Path(source), src.path)
    if write:
        check_eval_target(out)
    try:
        result, _ = _score(model, ds, proto, dev, precision, n_test, f"evaluate {src.path.name}", quiet)
        result.summary = {"source": str(source), "checkpoint": rec, "run_finished": finished,
                          "epochs_planned": src.planned, **result.summary}  # fmt: skip
        return _finish(result, out, write, quiet)
    except KeyboardInterrupt:
        raise EvaluationInterrupted(out) from None


def _build(state: dict[str, Any], device: torch.device) -> nn.Module:
    return checkpoint.build_from_checkpoint(state, device)


def evaluate_kept(run_dir: Path, redo: bool = False, **kwargs: Any) -> list[EvalResult]:
    """Evaluate each kept ``checkpoints/epoch-NNNN.pt`` of a run into ``RUN/eval-epoch-NNNN/``.

    Evaluations that are current (see :func:`eval_status`) are skipped unless ``redo``.
    ``kwargs`` go to :func:`evaluate` (``data``, ``device``, ``quiet`` …). Returns the new results.
    """
    run_dir = Path(run_dir)
    out = []
    for name in kept_checkpoints(run_dir):
        if redo or eval_status(run_dir, run_dir / f"eval-{name}") != "current":
            out.append(evaluate(run_dir, checkpoint=name, **kwargs))
    return out


def _build_named(model: str | Callable[..., nn.Module], num_classes: int, in_channels: int, kwargs):
    if callable(model):
        return model(num_classes=num_classes, **kwargs)
    from dainv.models import build_model

    try:
        return build_model(model, num_classes, in_channels, **kwargs)
    except (ValueError, TypeError) as e:
        if ":" not in model:
            raise RunError(f"cannot build model {model!r}: {e}") from None
    import importlib

    mod, _, fn = model.partition(":")
    try:
        factory = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise RunError(f"cannot import the model factory {model!r}: {e}") from None
    return factory(num_classes=num_classes, **kwargs)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path} does not exist; give the file of a saved state_dict") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise RunError(f"cannot read weights {path}: {str(e).splitlines()[0]}") from None
    if isinstance(sd, dict):
        sd = sd.get("model", sd.get("state_dict", sd))
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RunError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    for prefix in ("module.", "_orig_mod."):  # saved from DDP or torch.compile
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _with_taps(net: nn.Module, layers: list[str] | None) -> nn.Module:
    if hasattr(net, "tap_names"):
        return net
    if not layers:
        raise RunError("the model has no tap_names; name the submodules to score with --layers")
    try:
        from dainv.models import tapped
    except ImportError:
        raise RunError("this dainv cannot tap a plain module (no dainv.models.tapped)") from None
    return tapped(net, layers)


def evaluate_weights(
    model: str | Callable[..., nn.Module],
    weights: str | Path,
    data: str | Dataset,
    layers: list[str] | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate a plain ``state_dict`` of a named model: the paper's measurement for any network.

    Args:
        model: a registered model name (``allcnnc``), ``module.path:factory`` or a factory
            callable, called as ``factory(num_classes=N, **model_kwargs)``.
        weights: a file holding the model's ``state_dict`` (``torch.save(net.state_dict(), f)``).
        data: a data set spec (``cifar10``, ``npz:FILE`` …) or a loaded Dataset.
        layers: tap names to score (default: all the model's taps; required for a plain module).
        out: the evaluation folder (default ``WEIGHTS-eval`` beside the file).
        device: where to run (``auto``).
        model_kwargs: constructor arguments (e.g. ``{"width": 0.5}``).
        **options: ``data_root``, ``n_test``, ``seed``, ``per_transform``, ``quiet``, ``write``,
            ``precision`` (default ``fp32``).

    Returns:
        An :class:`EvalResult` with the protocol of docs/method.md §6 (default settings).
    """
    weights = Path(weights)
    dev = resolve_device(device or "auto")
    ds = load_dataset(data, options.get("data_root")) if isinstance(data, str) else data
    sd = _read_weights(weights)
    net = _build_named(model, ds.num_classes, ds.image_shape[0], dict(model_kwargs or {}))
    try:
        net.load_state_dict(sd)
    except RuntimeError as e:
        raise RunError(f"the weights in {weights} do not fit model {model!r}: {str(e).splitlines()[0]}") from None
    net = _with_taps(net, layers).to(dev).eval()
    proto = Protocol.from_config(RunConfig(), seed=options.get("seed"), layers=layers,
                                 per_transform=options.get("per_transform"))  # fmt: skip
    quiet, prec = options.get("quiet", False), options.get("precision", "fp32")
    out_dir = Path(out) if out is not None else weights.parent / f"{weights.stem}-eval"
    if options.get("write", True):
        check_eval_target(out_dir)
    try:
        result, _ = _score(net, ds, proto, dev, prec, options.get("n_test"), f"evaluate {weights.name}", quiet)
    except KeyboardInterrupt:
        raise EvaluationInterrupted(out_dir) from None
    name = model if isinstance(model, str) else getattr(model, "__qualname__", repr(model))
    rec = {"path": str(weights), "epoch": None, "step": None,
           "sha256": checkpoint.file_digest(weights), "final": True}  # fmt: skip
    result.summary = {"source": str(weights), "model": name, "checkpoint": rec, "run_finished": None,
                      **result.summary}  # fmt: skip
    return _finish(result, out_dir, options.get("write", True), quiet)
