"""``npz:PATH``: a user's data set as one ``numpy.savez`` file (format in :mod:`dainv.data`)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from dainv.data.core import Dataset, check_labels
from dainv.data.manifest import verify_manifests
from dainv.errors import DataError

NPZ_FORMAT = (
    "An npz dataset needs x_train and x_test (uint8, shape (N, H, W, C) with C = 1 or 3) and "
    "y_train and y_test (integer class labels 0..K-1, shape (N,), every class present in "
    "y_train), e.g. numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
)
_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_arrays(path: Path, bad) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise bad("it holds a single array, not named arrays (use numpy.savez)")
        with z:
            for key in _KEYS:
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
    return arrays


def _check_split(arrays: dict[str, np.ndarray], split: str, bad) -> None:
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.dtype != np.uint8:
        raise bad(f"key 'x_{split}' has dtype {x.dtype}, expected uint8 (pixel values 0..255)")
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise bad(f"key 'x_{split}' has shape {x.shape}, expected (N, H, W, C) with C = 1 or 3")
    if x.shape[0] < 1:
        raise bad(f"key 'x_{split}' holds no images")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise bad(
            f"key 'y_{split}' has dtype {y.dtype} and shape {y.shape}, expected integers of shape (N,)"
        )
    if len(y) != len(x):
        raise bad(f"key 'y_{split}' has {len(y)} labels but 'x_{split}' has {len(x)} images")
    if y.min() < 0:
        raise bad(
            f"key 'y_{split}' has negative labels (found {int(y.min())}); labels must be 0..K-1"
        )


def load_npz(name: str, path_str: str, *, allow_missing_classes: bool = False) -> Dataset:
    """Load ``npz:PATH`` (``name`` is the whole spec, kept as the data set's name)."""
    if not path_str:
        raise DataError(f"Dataset {name!r} names no file. Use npz:<path>, e.g. npz:data/mine.npz.")
    path = Path(path_str).expanduser().absolute()

    def bad(what: str) -> DataError:
        return DataError(f"Invalid npz dataset {path}: {what}.\n{NPZ_FORMAT}")

    if not path.is_file():
        raise DataError(
            f"npz dataset file not found: {path} (from {name!r}; relative paths are taken from "
            f"the current directory, {Path.cwd()}). Check the path.\n{NPZ_FORMAT}"
        )
    notes = verify_manifests(path, f"Restore {path} from where it came from (copy it again).")
    arrays = _read_arrays(path, bad)
    for split in ("train", "test"):
        _check_split(arrays, split, bad)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise bad(
            f"'x_train' images are {arrays['x_train'].shape[1:]} (H, W, C) but 'x_test' images "
            f"are {arrays['x_test'].shape[1:]}"
        )
    k = check_labels(
        arrays["y_train"],
        arrays["y_test"],
        where=f"Invalid npz dataset {path}",
        hint=NPZ_FORMAT,
        allow_missing_classes=allow_missing_classes,
    )

    def to_nchw(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    return Dataset(
        name=name,
        x_train=to_nchw(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=to_nchw(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=k,
        classes=[str(i) for i in range(k)],
        source=str(path),
        notes=notes,
    )
