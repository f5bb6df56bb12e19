"""``python -m dainv.report FOLDER…``: the same as ``dainv report FOLDER…`` (run as the ``dainv``
command, not imported: the report never imports the command line above it)."""

import runpy
import sys

sys.argv = ["dainv", "report", *sys.argv[1:]]
runpy.run_module("dainv", run_name="__main__", alter_sys=True)
