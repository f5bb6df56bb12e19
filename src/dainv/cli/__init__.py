"""The ``dainv`` command: train, evaluate, reproduce, report, presets, data.

Every user-fixable problem (a :class:`~dainv.errors.DainvError`) is printed as one message
and exits with status 2, without a traceback unless ``--debug``.

The package's modules: :mod:`~dainv.cli.parser` (the argument parser, one builder per
subcommand), one module per subcommand's handler (:mod:`~dainv.cli.train`,
:mod:`~dainv.cli.evaluate`, :mod:`~dainv.cli.reproduce`, :mod:`~dainv.cli.report`,
:mod:`~dainv.cli.presets`, :mod:`~dainv.cli.data`) and :mod:`~dainv.cli.common` (what they share).
"""

from __future__ import annotations

import sys

from dainv.cli.data import _data
from dainv.cli.evaluate import _evaluate
from dainv.cli.parser import build_parser
from dainv.cli.presets import _presets
from dainv.cli.report import _report
from dainv.cli.reproduce import _reproduce
from dainv.cli.train import _train
from dainv.errors import DainvError

__all__ = ["main", "build_parser"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = {
        "train": _train,
        "evaluate": _evaluate,
        "reproduce": _reproduce,
        "report": _report,
        "presets": _presets,
        "data": _data,
    }[args.command]
    try:
        return handler(args)
    except DainvError as e:
        if args.debug:
            raise
        print(f"{e.prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            f"dainv: interrupted; {_INTERRUPTED.get(args.command, 'nothing more was done')}",
            file=sys.stderr,
        )
        return 130


_INTERRUPTED = {
    "train": "the run folder keeps its last checkpoint (continue with dainv train --resume RUN)",
    "evaluate": "the evaluation is incomplete; run the same command again",
    "reproduce": "finished arms are kept; run the same command again to continue",
}


if __name__ == "__main__":
    raise SystemExit(main())
