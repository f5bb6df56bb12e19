"""``dainv data DATASET``: load a data set once, print what dainv sees, fill the cache.

Useful before a long run: it validates the files, decodes an image folder into its cache (so
training starts instantly), and prints the classes, shapes and notes (skipped files, checksums).
Exit status 0 when the data set loads, 2 with a one-paragraph message when it does not.
"""

from __future__ import annotations

import argparse


def _data(args: argparse.Namespace) -> int:
    from dainv.data.registry import load_dataset

    ds = load_dataset(
        args.spec,
        args.data_root,
        download=True if args.download else None,
        image_size=args.image_size,
        skip_bad=bool(args.skip_bad),
        allow_missing_classes=args.allow_missing_classes,
        workers=args.workers,
    )
    c, h, w = ds.image_shape
    shown = ", ".join(ds.classes[:10]) + (", ..." if len(ds.classes) > 10 else "")
    print(f"{ds.name}: {len(ds.y_train)} train + {len(ds.y_test)} test images, {c}x{h}x{w}")
    print(f"{ds.num_classes} classes: {shown}")
    print(f"source: {ds.source}")
    for note in ds.notes:
        print(f"note: {note}")
    return 0
