"""``npz:PATH``: a user's data set as one ``numpy.savez`` file (format: :data:`NPZ_FORMAT`)."""

from __future__ import annotations

import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from dainv.data.core import Dataset, LoadOptions, data_error, from_arrays
from dainv.data.manifest import verify_manifests
from dainv.errors import DataError

NPZ_FORMAT = ("An npz dataset needs x_train and x_test (uint8, shape (N, H, W, C) with C = 1 or 3) and y_train and "
              "y_test (integer class labels 0..K-1, shape (N,), every class present in y_train), e.g. "
              "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...).")  # fmt: skip


def load_npz(name: str, path_str: str, o: LoadOptions) -> Dataset:
    """``npz:PATH`` (channels-last images), read without pickle: object arrays are refused."""
    path = Path(path_str).expanduser().absolute()
    where = f"Invalid npz dataset {path}"
    bad = partial(data_error, where, hint=NPZ_FORMAT)
    if not path.is_file():
        raise DataError(f"npz dataset file not found: {path} (from {name!r}; relative paths are taken from the "
                        f"current directory, {Path.cwd()}). Check the path.\n{NPZ_FORMAT}")  # fmt: skip
    notes = verify_manifests(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise bad("it holds a single array, not named arrays (use numpy.savez)")
        with z:
            for key in ("x_train", "y_train", "x_test", "y_test"):
                if key not in z.files:
                    raise bad(f"key '{key}' is missing (found keys: {sorted(z.files)})")
                try:
                    arrays[key] = z[key]
                except ValueError as exc:  # object arrays need pickle, which is refused
                    raise bad(f"key '{key}' cannot be read without pickle ({exc})") from None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise bad(f"it is not a readable .npz file ({type(exc).__name__}: {exc})") from None
    return from_arrays(name, arrays, where=where, source=str(path), hint=NPZ_FORMAT, channels_last=True,
                       allow_missing_classes=o.allow_missing_classes, notes=notes)  # fmt: skip
