"""The first N training and test images of CIFAR-10 as one npz (``data.dataset=npz:PATH``).

A lent GPU session carries at most 64 MiB of data with the repository, and CIFAR-10's training
set is 150 MB; 18,000 training + 2,000 test images (61.6 MB) fit:

    .venv/bin/python benchmarks/cifar_subset.py .gpunpz/cifar10-18k.npz --train 18000 --test 2000
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from dainv.data import load_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the .npz to write (keep it out of git: .git/info/exclude)")
    p.add_argument("--train", type=int, default=18000, help="first N training images (default 18000)")
    p.add_argument("--test", type=int, default=2000, help="first N test images (default 2000)")
    p.add_argument("--root", default=os.environ.get("DAINV_DATA"), help="folder holding cifar-10-batches-py/")
    a = p.parse_args(argv)
    d = load_dataset("cifar10", a.root, download=False).subset(a.train, a.test)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    nhwc = {k: getattr(d, k).permute(0, 2, 3, 1).numpy() for k in ("x_train", "x_test")}
    np.savez(a.out, **nhwc, y_train=d.y_train.numpy(), y_test=d.y_test.numpy())
    print(f"{a.out}: {len(d.y_train)} training and {len(d.y_test)} test images, {a.out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
