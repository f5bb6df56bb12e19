"""The ``dainv`` command: a :class:`~dainv.errors.DainvError` is one message and exit status 2."""

from __future__ import annotations

import sys

from dainv.cli.commands import HANDLERS, INTERRUPTED
from dainv.cli.parser import build_parser
from dainv.errors import DainvError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return HANDLERS[args.command](args)
    except DainvError as e:
        if args.debug:
            raise
        print(f"{e.prefix}{e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        done = INTERRUPTED.get(args.command, "nothing more was done")
        print(f"dainv: interrupted; {done}", file=sys.stderr)
        return 130
