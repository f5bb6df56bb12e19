"""``python -m dainv.data DATASET …``: the same as ``dainv data DATASET …`` (:mod:`dainv.cli.commands`)."""

import sys

from dainv.cli import main as dainv


def main(argv: list[str] | None = None) -> int:
    return dainv(["data", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
