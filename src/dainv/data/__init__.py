"""Data sets as uint8 ``(N, C, H, W)`` tensors, loaded whole into memory (augmentation and batching run on the
device, no DataLoader; kinds: :mod:`dainv.data.registry`). Any problem is a DataError naming the file and the fix."""

from __future__ import annotations

from dainv.data.core import (
    MAX_CLASSES,
    Dataset,
    check_labels,
    default_data_root,
    images_to_float,
    random_dataset,
    resolve_data_root,
)
from dainv.data.registry import (
    DatasetSpecError,
    check_dataset_spec,
    dataset_kinds,
    load_configured,
    load_dataset,
    register_dataset,
)

__all__ = [
    "MAX_CLASSES", "Dataset", "DatasetSpecError", "check_dataset_spec", "check_labels",
    "dataset_kinds", "default_data_root", "images_to_float", "load_configured", "load_dataset",
    "random_dataset", "register_dataset", "resolve_data_root",
]  # fmt: skip
