"""``python -m dainv.report FOLDER…``: the same as ``dainv report FOLDER…``."""

import sys

from dainv.cli import main

raise SystemExit(main(["report", *sys.argv[1:]]))
