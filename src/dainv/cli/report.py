"""``dainv report``: rebuild a reproduction's report, or compare run folders side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from dainv.errors import DainvError


def _report(args: argparse.Namespace) -> int:
    from dainv.report import build_report, compare_runs, is_reproduction_dir, write_report
    from dainv.report.load import load_reproduction
    from dainv.runio import is_run_dir

    folders = list(args.folders)
    if len(folders) == 1 and is_reproduction_dir(folders[0]):
        md = (
            write_report(load_reproduction(folders[0]), args.out)
            if args.out
            else build_report(folders[0])
        )
    else:
        bad = [f for f in folders if not is_run_dir(f)]
        if bad:
            raise DainvError(
                f"{bad[0]} is not a reproduction folder (no reproduce.json) nor a run folder (no "
                "config.yaml and meta.json); give the folder that `dainv reproduce` wrote, or run folders"
            )
        md = compare_runs(folders, args.out or Path("report"))
    print(md)
    print(md.with_suffix(".html"))
    return 0
