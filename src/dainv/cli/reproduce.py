"""``dainv reproduce``: every arm of a preset, evaluation and the report, resumable."""

from __future__ import annotations

import argparse
from typing import Any

from dainv.cli.common import T0, _print_report
from dainv.errors import DainvError


def _reproduce(args: argparse.Namespace) -> int:
    from dainv.reproduce import reproduce

    if not args.preset:
        raise DainvError("reproduce needs --preset (see `dainv presets`), e.g. --preset quick")
    if args.config:
        raise DainvError("reproduce takes a --preset and --set overrides, not --config files")
    arms = [a.strip() for a in args.arms.split(",")] if args.arms else None
    extra: dict[str, Any] = {}
    if args.parallel is not None:
        if args.parallel < 1:
            raise DainvError(
                f"--parallel {args.parallel}: give the number of arms to train at once, >= 1"
            )
        extra["parallel"] = args.parallel
    if args.force:
        extra["force"] = True
    if args.time_limit:
        extra["deadline"] = T0 + args.time_limit
    if args.download:
        extra["download"] = True
    report = reproduce(
        args.preset,
        out=args.out,
        arms=arms,
        seeds=args.seeds,
        overrides=args.overrides,
        data_root=args.data_root,
        device=args.device,
        per_transform=args.per_transform,
        quiet=args.quiet,
        **extra,
    )
    _print_report(report)
    return 0
