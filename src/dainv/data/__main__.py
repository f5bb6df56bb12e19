"""``python -m dainv.data SPEC``: load a data set once, print what dainv sees, fill the cache.

Useful before a long run: it validates the files, decodes an image folder into its cache (so
training starts instantly), and prints the classes, shapes and notes (skipped files, checksums).
Exit status 0 when the data set loads, 2 with a one-paragraph message when it does not.
"""

from __future__ import annotations

import argparse
import sys

from dainv.cli.common import DOWNLOAD_HELP
from dainv.data.registry import dataset_kinds, kinds_text, load_dataset
from dainv.errors import DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dainv.data",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="data sets:\n" + kinds_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("spec", help="data set: " + ", ".join(dataset_kinds()))
    p.add_argument("--data-root", help="where CIFAR is looked for (default: $DAINV_DATA)")
    p.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    p.add_argument("--image-size", type=int, help="resize image folders to N x N pixels")
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable images out")
    p.add_argument(
        "--allow-missing-classes", action="store_true", help="accept classes without images"
    )
    p.add_argument("--workers", type=int, help="decoding processes (default: up to 8)")
    args = p.parse_args(argv)
    try:
        ds = load_dataset(
            args.spec,
            args.data_root,
            download=True if args.download else None,
            image_size=args.image_size,
            skip_bad=args.skip_bad,
            allow_missing_classes=args.allow_missing_classes,
            workers=args.workers,
        )
    except DataError as exc:
        print(f"dainv: error: {exc}", file=sys.stderr)
        return exc.exit_code
    c, h, w = ds.image_shape
    shown = ", ".join(ds.classes[:10]) + (", ..." if len(ds.classes) > 10 else "")
    print(f"{ds.name}: {len(ds.y_train)} train + {len(ds.y_test)} test images, {c}x{h}x{w}")
    print(f"{ds.num_classes} classes: {shown}")
    print(f"source: {ds.source}")
    for note in ds.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
