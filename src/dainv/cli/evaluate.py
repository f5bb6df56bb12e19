"""``dainv evaluate``: a run folder or checkpoint, or a network trained elsewhere
(``--model``/``--weights``/``--data``)."""

from __future__ import annotations

import argparse
from typing import Any

from dainv.cli.common import _print_summary
from dainv.errors import DainvError


def _evaluate(args: argparse.Namespace) -> int:
    from dainv import evaluate as ev

    layers = _checked_layers(args)
    common = dict(
        per_transform=args.per_transform or None,
        n_test=args.n_test,
        seed=args.seed,
        quiet=args.quiet,
    )
    if args.weights is not None or args.model is not None:
        s = _evaluate_weights(ev, args, layers, common)
    else:
        s = _evaluate_run(ev, args, layers, common)
    _print_summary(s)
    return 0


def _checked_layers(args: argparse.Namespace) -> list[str] | None:
    """Refuse a bad device, ``--n-test`` or ``--layers`` before any work; the layer list."""
    from dainv.runtime import resolve_device

    if args.device:
        resolve_device(args.device)  # an invalid device is refused before any work
    if args.n_test is not None and args.n_test < 2:
        raise DainvError(
            f"--n-test {args.n_test}: give at least 2 test images (Eq. 2's denominator is the mean "
            "distance to the other test images, docs/method.md §2)"
        )
    layers = [x.strip() for x in args.layers.split(",") if x.strip()] if args.layers else None
    if args.layers is not None and not layers:
        raise DainvError(
            "--layers is empty; give comma-separated layer names, e.g. --layers conv7,conv8"
        )
    return layers


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
        device=args.device, data_root=args.data_root, download=args.download or None, **common,
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
    kwargs = dict(
        out_dir=args.out,
        data_root=args.data_root,
        download=args.download or None,
        dataset=args.dataset,
        device=args.device,
        **common,
    )
    return ev.evaluate(args.source, layers=layers, checkpoint=args.checkpoint, **kwargs)
