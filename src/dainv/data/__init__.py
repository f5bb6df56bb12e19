"""Data sets as uint8 tensors in memory: CIFAR-10/100, ``.npz`` files, image folders, Tiny ImageNet.

Everything is loaded at once (CIFAR-10 is 180 MB as uint8) so that augmentation and batching run
on the device without a DataLoader. Images stay uint8 ``(N, C, H, W)``; :func:`images_to_float`
gives the [0, 1] floats the model sees (docs/method.md: no normalisation). A data set is named by
a spec, one kind each in :mod:`dainv.data.registry`. Any problem — missing, truncated, malformed,
failed checksum — is a :class:`~dainv.errors.DataError` that names the file and says how to fix
it. This package is the public address of the names below; each lives in one submodule.
"""

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
    "DATASETS", "MAX_CLASSES", "Dataset", "DatasetSpecError", "check_dataset_spec", "check_labels",
    "dataset_kinds", "default_data_root", "images_to_float", "load_configured", "load_dataset",
    "random_dataset", "register_dataset", "resolve_data_root",
]  # fmt: skip

DATASETS = dataset_kinds()  # the built-in data-set specs; dataset_kinds() also lists kinds registered later
