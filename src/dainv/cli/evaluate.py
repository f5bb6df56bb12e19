"""``dainv evaluate``: a run folder or checkpoint, or a network trained elsewhere
(``--model``/``--weights``/``--data``)."""

from __future__ import annotations

import argparse
from typing import Any

from dainv.cli.common import _print_summary
from dainv.errors import ConfigError, DainvError


def _evaluate(args: argparse.Namespace) -> int:
    from dainv import evaluate as ev

    layers = _checked_layers(args)
    common = dict(
        per_transform=args.per_transform or None,
        n_test=args.n_test,
        seed=args.seed,
        quiet=args.quiet,
        normalize=_normalize(args.normalize),
        image_size=args.image_size,
        skip_bad=args.skip_bad,
    )
    if args.weights is not None or args.model is not None:
        s = _evaluate_weights(ev, args, layers, common)
    else:
        s = _evaluate_run(ev, args, layers, common)
    _print_summary(s)
    return 0


def _checked_layers(args: argparse.Namespace) -> list[str] | None:
    """Refuse a bad device, ``--n-test``, ``--seed``, ``--image-size`` or ``--layers`` before
    any work; the layer list (the syntax of ``train.layers``: :func:`dainv.config.layer_list`)."""
    from dainv.config import MAX_SEED, layer_list
    from dainv.runtime import resolve_device

    if args.device:
        resolve_device(args.device)  # an invalid device is refused before any work
    if args.n_test is not None and args.n_test < 2:
        raise DainvError(
            f"--n-test {args.n_test}: give at least 2 test images (Eq. 2's denominator is the mean "
            "distance to the other test images, docs/method.md §2)"
        )
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        shown = args.seed if abs(args.seed) < 10**12 else f"an integer of {len(str(abs(args.seed)))} digits"
        raise ConfigError(f"--seed {shown}: give a seed from 0 to {MAX_SEED}")
    if args.image_size is not None and not 8 <= args.image_size <= 4096:
        raise ConfigError(f"--image-size {args.image_size}: give 8 to 4096 pixels per side")
    if args.layers is None:
        return None
    layers = layer_list(args.layers)
    if layers is None or layers == "auto":
        what = "is empty" if not args.layers.strip(" ,[]") else f"{args.layers!r} is not a list of names"
        raise ConfigError(
            f"--layers {what}; give layer names, comma-separated (e.g. --layers conv7,conv8, or "
            "[conv7,conv8]); leave it out for all the model's layers"
        )
    return layers


def _normalize(text: str | None) -> tuple[list[float], list[float]] | None:
    """``--normalize MEAN/STD`` (comma-separated per-channel values) as ``(mean, std)``."""
    if text is None:
        return None
    mean, sep, std = text.partition("/")
    try:
        if not sep:
            raise ValueError
        return [float(v) for v in mean.split(",")], [float(v) for v in std.split(",")]
    except ValueError:
        raise ConfigError(
            f"--normalize {text!r}: give MEAN/STD with per-channel values, e.g. --normalize "
            "0.49,0.48,0.45/0.25,0.24,0.26 (or 0.5/0.25 for all channels), as the network was trained"
        ) from None


def _model_kwargs(text: str | None) -> dict[str, Any] | None:
    """``--model-kwargs JSON``, read as ``--set model.kwargs=...`` is (a JSON or YAML mapping)."""
    if text is None:
        return None
    from dainv.config import from_dict, parse_yaml

    where = f"--model-kwargs {text}"
    how = "give a JSON object of constructor arguments, e.g. --model-kwargs '{\"width\": 0.5}'"
    try:
        val = parse_yaml(text, where)
    except ConfigError as e:
        raise ConfigError(f"{' '.join(str(e).split())[:160]}; {how}") from None
    if not isinstance(val, dict):
        raise ConfigError(f"{where}: {how}")
    return from_dict({"model": {"kwargs": val}}, source=where).model.kwargs


def _evaluate_weights(
    ev: Any, args: argparse.Namespace, layers: list[str] | None, common: dict[str, Any]
) -> dict[str, Any]:
    """A network trained elsewhere: ``--model``, ``--weights`` and ``--data``."""
    missing = [
        f
        for f, v in (
            ("--model", args.model),
            ("--weights", args.weights),
            ("--data", args.dataset),
        )
        if not v
    ]
    if missing:
        raise DainvError(
            f"evaluating a network trained elsewhere needs --model, --weights and --data; missing "
            f"{', '.join(missing)} (e.g. --model allcnnc --weights net.pt --data cifar10)"
        )
    if args.source is not None:
        raise DainvError(
            f"give either a run folder or checkpoint ({args.source}) or --model/--weights, not both"
        )
    return ev.evaluate_weights(
        model=args.model, weights=args.weights, data=args.dataset, layers=layers, out=args.out,
        device=args.device, data_root=args.data_root, model_kwargs=_model_kwargs(args.model_kwargs),
        download=args.download or None,
        **common,
    )  # fmt: skip


def _evaluate_run(
    ev: Any, args: argparse.Namespace, layers: list[str] | None, common: dict[str, Any]
) -> dict[str, Any]:
    """A run folder or a dainv checkpoint."""
    if args.source is None:
        raise DainvError(
            "give a run folder or checkpoint to evaluate (dainv evaluate runs/dai), or a network "
            "trained elsewhere with --model NAME --weights FILE.pt --data DATASET"
        )
    if args.model_kwargs is not None:
        raise ConfigError(
            "--model-kwargs goes with --model/--weights; a checkpoint names its own constructor "
            "arguments (model_info)"
        )
    kwargs = dict(
        out_dir=args.out,
        data_root=args.data_root,
        download=args.download or None,
        dataset=args.dataset,
        device=args.device,
        **common,
    )
    return ev.evaluate(args.source, layers=layers, checkpoint=args.checkpoint, **kwargs)
