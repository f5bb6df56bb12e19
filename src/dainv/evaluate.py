"""Evaluation of a trained network (SPEC §6): accuracy and per-layer invariance (Eq. 2).

* accuracy on the test set: single view, and the mean softmax over 10 ``light`` views;
* invariance scores at every layer from ``input`` to ``conv9`` for every test image under
  ``T`` = 5 ``heavier_eval`` transformations, BN in eval mode, streamed through
  :class:`~dainv.invariance.InvarianceMeter` (memory bounded by the batch, never N×D);
* optionally (``per_transform``) the same scores for each transformation type alone.

Pass 1 runs the originals once (reference sums of Eq. 2's denominator, and the single-view
accuracy); pass 2 runs each batch of originals again together with its T transformations.
"""

from __future__ import annotations

import dataclasses
import sys
import time
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
from dainv.invariance import InvarianceMeter
from dainv.runtime import autocast, resolve_device, resolve_precision

__all__ = ["load_checkpoint", "evaluate", "per_transform_schemes", "summarise"]


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


def summarise(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Median, quartiles, mean and whisker ends (1.5 IQR) per layer."""
    out: dict[str, dict[str, float]] = {
        k: {} for k in ("median", "q1", "q3", "mean", "whislo", "whishi")
    }
    for layer, s in scores.items():
        v = s.reshape(-1).astype(np.float64)
        q1, med, q3 = np.percentile(v, [25, 50, 75])
        iqr = q3 - q1
        out["median"][layer] = float(med)
        out["q1"][layer] = float(q1)
        out["q3"][layer] = float(q3)
        out["mean"][layer] = float(v.mean())
        out["whislo"][layer] = float(v[v >= q1 - 1.5 * iqr].min())
        out["whishi"][layer] = float(v[v <= q3 + 1.5 * iqr].max())
    return out


class _Runner:
    def __init__(self, model: nn.Module, device: torch.device, precision: str) -> None:
        self.model, self.device, self.precision = model, device, precision
        self.taps = list(model.tap_names)

    def __call__(self, x: torch.Tensor, taps: bool = True):
        with autocast(self.device, self.precision):
            return self.model(x, taps=self.taps) if taps else self.model(x)


@torch.no_grad()
def evaluate(
    source: Path,
    out_dir: Path | None = None,
    data: Dataset | None = None,
    data_root: str | None = None,
    dataset: str | None = None,
    device: str | None = None,
    per_transform: bool | None = None,
    n_test: int | None = None,
    seed: int | None = None,
    quiet: bool = False,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate a run folder or checkpoint; writes ``summary.json`` and ``scores.npz`` to ``out_dir``.

    ``out_dir`` defaults to ``RUN/eval`` (or ``eval/`` beside a checkpoint file); ``dataset``
    (``cifar10``, ``cifar100``, ``npz:PATH``) replaces the run's ``data.dataset``. Returns the
    summary, with the raw scores under the key ``"_scores"`` ({layer: (N, T)}) when called
    from Python.
    """

    source = Path(source)
    dev = resolve_device(device or "auto")
    model, cfg, info = load_checkpoint(source, dev)
    ec = cfg.eval
    per_transform = ec.per_transform if per_transform is None else per_transform
    seed = ec.seed if seed is None else seed
    if data is None:
        data = load_dataset(dataset or cfg.data.dataset, data_root or cfg.data.root)
    if data.num_classes != info["num_classes"]:
        raise RunError(
            f"the checkpoint {source} predicts {info['num_classes']} classes but the data set "
            f"{data.name} has {data.num_classes}; evaluate it on the data set it was trained on"
        )
    if tuple(data.image_shape[:1]) != (info["in_channels"],):
        raise RunError(
            f"the checkpoint expects {info['in_channels']}-channel images, {data.name} has {data.image_shape[0]}"
        )
    n_test = n_test if n_test is not None else cfg.data.n_test
    data = data.subset(None, n_test)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    n = x_test.shape[0]
    precision = resolve_precision(cfg.train.precision, dev)
    run = _Runner(model, dev, precision)
    interp = cfg.augment.interpolation
    t_count = ec.transforms
    bs = ec.batch_size
    bs2 = max(1, bs // (t_count + 1))  # pass 2 forwards originals + T views together

    main_scheme = get_scheme(ec.scheme)
    schemes: dict[str, Scheme] = {"all": main_scheme}
    if per_transform:
        schemes.update(per_transform_schemes(main_scheme))
    meters = {k: InvarianceMeter(run.taps) for k in schemes}

    n_batches1 = -(-n // bs)
    n_batches2 = -(-n // bs2)
    total = n_batches1 * (1 + ec.tta_views) + n_batches2 * len(schemes)
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="batch", desc=f"evaluate {source.name}", dynamic_ncols=True)
    t0 = time.perf_counter()

    # Pass 1: reference sums, single-view accuracy, and the light-view TTA accuracy.
    light = SCHEMES["light"]
    g_tta = torch.Generator(device=dev).manual_seed(seed * 31 + 1)
    correct1 = torch.zeros((), dtype=torch.long, device=dev)
    correct_tta = torch.zeros((), dtype=torch.long, device=dev)
    for i in range(0, n, bs):
        x = images_to_float(x_test[i : i + bs])
        y = y_test[i : i + bs]
        logits, acts = run(x)
        for m in meters.values():
            m.update_reference(acts)
        del acts
        correct1 += (logits.argmax(1) == y).sum()
        probs = torch.zeros(x.shape[0], info["num_classes"], device=dev)
        for _ in range(ec.tta_views):
            xv = apply(x, sample_params(light, x.shape[0], g_tta, dev), interp)
            probs += torch.softmax(run(xv, taps=False).float(), dim=1)
            if bar is not None:
                bar.update(1)
        correct_tta += (probs.argmax(1) == y).sum()
        if bar is not None:
            bar.update(1)

    # Pass 2: per-image numerators under each scheme (parameters drawn per scheme, seeded).
    gens = {
        k: torch.Generator(device=dev).manual_seed(seed * 1009 + j) for j, k in enumerate(schemes)
    }
    for i in range(0, n, bs2):
        x = images_to_float(x_test[i : i + bs2])
        b = x.shape[0]
        for k, scheme in schemes.items():
            xt = x.repeat_interleave(t_count, 0)
            xt = apply(xt, sample_params(scheme, xt.shape[0], gens[k], dev), interp)
            _, acts = run(torch.cat([x, xt]))
            orig = {name: a[:b] for name, a in acts.items()}
            trans = {name: a[b:].reshape(b, t_count, *a.shape[1:]) for name, a in acts.items()}
            meters[k].update(orig, trans)
            del acts, orig, trans
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0

    scores = meters["all"].compute()
    stats = summarise(scores)
    summary: dict[str, Any] = {
        "source": str(source),
        "accuracy": {
            "single_view": correct1.item() / n,
            "light_tta10" if ec.tta_views == 10 else f"light_tta{ec.tta_views}": correct_tta.item() / n,
        },
        "invariance": {"layers": run.taps, "n_images": n, "n_transforms": t_count, **stats},
        "protocol": {
            "scheme": ec.scheme,
            "scheme_params": dataclasses.asdict(main_scheme),
            "transforms_per_image": t_count,
            "tta_views": ec.tta_views,
            "interpolation": interp,
            "precision": precision,
            "bn": "eval",
            "seed": seed,
            "data": data.name,
            "n_test": n,
        },
        "wall_time_s": wall,
        "environment": runio.environment(dev),
    }
    pt_scores = {}
    if per_transform:
        summary["per_transform"] = {}
        for k in TRANSFORMS:
            pt_scores[k] = meters[k].compute()
            summary["per_transform"][k] = summarise(pt_scores[k])["median"]
    if write:
        out = Path(out_dir) if out_dir is not None else _default_out(source)
        runio.write_json(out / "summary.json", summary)
        _save_npz(out / "scores.npz", scores)
        if per_transform:
            _save_npz(
                out / "per_transform.npz",
                {f"{k}/{layer}": v for k, d in pt_scores.items() for layer, v in d.items()},
            )
        if not quiet:
            print(f"wrote {out / 'summary.json'} and {out / 'scores.npz'}", file=sys.stderr)
    summary["_scores"] = scores
    return summary


def _default_out(source: Path) -> Path:
    if source.is_dir():
        return source / "eval"
    if source.parent.name == "checkpoints":  # RUN/checkpoints/final.pt → RUN/eval
        return source.parent.parent / "eval"
    return source.parent / f"{source.stem}-eval"


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    runio.atomic_write_bytes(path, buf.getvalue())
