"""Datasets as uint8 tensors in memory: CIFAR-10/100, ``.npz`` files, image folders, Tiny ImageNet.

Everything is loaded at once (CIFAR-10 is 180 MB as uint8) so that augmentation and batching can
run on the device without a DataLoader. Images stay uint8 ``(N, C, H, W)``;
:func:`images_to_float` gives the [0, 1] floats the model sees (docs/method.md: no
normalisation).

Data sets are named by a spec, one entry each in the registry (:mod:`dainv.data.registry`,
:func:`check_dataset_spec`, :func:`register_dataset`):

* ``cifar10``, ``cifar100`` — the official python format, looked for in the data root
  (:func:`resolve_data_root`: ``--data-root``, else ``$DAINV_DATA``, else
  :func:`default_data_root`): the extracted folder, else the official archive (extracted
  atomically), else a download of it with its published MD5 checked (into the default data
  folder; into another root only with ``download=True``, ``--download``). Every file is validated
  (dtype, shape, counts, label range). When a checksum manifest sits next to the folder
  (``cifar-10-batches-py.sha256`` or ``.md5``, ``sha256sum`` format, paths relative to the
  manifest's folder), every file it lists is verified; the result is remembered by size and
  modification time (and inode), so the 180 MB are hashed once (``DAINV_VERIFY=always|off``).
* ``npz:PATH`` — one file written by ``numpy.savez(PATH, x_train=..., y_train=..., x_test=...,
  y_test=...)`` (``savez_compressed`` works too; pickled object arrays are refused):

  ========  =============================  ===========================================
  key       dtype                          shape
  ========  =============================  ===========================================
  x_train   uint8 (pixel values 0..255)    (N_train, H, W, C), C = 1 (grey) or 3 (RGB)
  y_train   any integer type               (N_train,), class indices 0..C-1
  x_test    uint8                          (N_test, H, W, C), same H, W, C as x_train
  y_test    any integer type               (N_test,), class indices 0..C-1
  ========  =============================  ===========================================

  The number of classes is ``max label + 1``; it must be at least 2, at most 100,000 and at
  most ``N_train``, and every class 0..C-1 must occur in ``y_train`` (else renumber with
  ``numpy.unique(y, return_inverse=True)``, or pass ``allow_missing_classes=True``).
  Images are channels-last in the file and channels-first (NCHW) in memory.
* ``folder:PATH`` — ``PATH/train/<class>/<images>`` and ``PATH/test/<class>/<images>`` (or
  ``val/``), class names sorted (label i = i-th name), the same classes in both splits, any
  format Pillow reads, converted to RGB and resized to ``image_size`` (default: the images' own
  size, which must then be the same for all).
* ``tinyimagenet:PATH`` — the official Tiny ImageNet layout (``wnids.txt``,
  ``train/<wnid>/images/*.JPEG``, ``val/images`` + ``val/val_annotations.txt``; val is the test
  split), 64×64, wnids sorted.

Image kinds are decoded once, by worker processes, into a uint8 cache in dainv's cache folder
(``user_cache_dir()/images/``, written atomically; never in the user's folder), keyed by every
file's path, size and modification time and ``image_size``: later
runs load it instantly, and a changed file invalidates it. An unreadable image is named in a
:class:`~dainv.errors.DataError` (with the reason), or with ``skip_bad=True`` left out and
listed in ``Dataset.skipped`` and ``Dataset.notes``.

Any problem — missing, truncated, malformed, failed checksum — is a
:class:`~dainv.errors.DataError` that names the file and says how to fix it.
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
    user_cache_dir,
)
from dainv.data.npz import NPZ_FORMAT
from dainv.data.registry import (
    REGISTRY,
    DatasetKind,
    DatasetSpecError,
    check_dataset_spec,
    dataset_kinds,
    load_configured,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "MAX_CLASSES",
    "NPZ_FORMAT",
    "REGISTRY",
    "Dataset",
    "DatasetKind",
    "DatasetSpecError",
    "check_dataset_spec",
    "check_labels",
    "dataset_kinds",
    "default_data_root",
    "images_to_float",
    "load_configured",
    "load_dataset",
    "random_dataset",
    "register_dataset",
    "resolve_data_root",
    "user_cache_dir",
]

DATASETS = dataset_kinds()
"""The built-in data-set specs: ``cifar10``, ``cifar100``, ``npz:PATH``, ``folder:PATH``,
``tinyimagenet:PATH`` (:func:`dataset_kinds` also lists kinds registered later)."""
