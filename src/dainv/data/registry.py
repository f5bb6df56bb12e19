"""The one table of data-set kinds: a spec is ``KIND`` or ``KIND:PATH``; a new kind is one
:func:`register_dataset` call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import dainv.data.cifar as cifar
import dainv.data.images as images
from dainv.data.core import Dataset, LoadOptions
from dainv.data.npz import load_npz
from dainv.errors import DataError

Loader = Callable[[str, str, LoadOptions], Dataset]


class DatasetSpecError(DataError, ValueError):
    """An unknown or malformed data-set spec (both a :class:`DataError` and a ``ValueError``)."""


@dataclass(frozen=True)
class DatasetKind:
    """One registry entry: ``name`` or ``name:PATH`` (``takes_path``), ``help`` for messages."""

    name: str
    takes_path: bool
    help: str
    load: Loader

    @property
    def usage(self) -> str:
        return f"{self.name}:PATH" if self.takes_path else self.name


REGISTRY: dict[str, DatasetKind] = {}


def register_dataset(name: str, load: Loader, *, takes_path: bool, help: str) -> DatasetKind:
    """Add a data-set kind (``load(spec, path, options) -> Dataset``); returns the entry."""
    if not name or not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
        raise ValueError(f"data-set kind names are lower-case words, got {name!r}")
    REGISTRY[name] = DatasetKind(name, takes_path, help, load)
    return REGISTRY[name]


register_dataset("cifar10", cifar.load_cifar, takes_path=False,
                 help="CIFAR-10, python format, from the data root (downloaded if missing; see --download)")
register_dataset("cifar100", cifar.load_cifar, takes_path=False,
                 help="CIFAR-100 (fine labels), python format, from the data root")
register_dataset("npz", load_npz, takes_path=True, help="one numpy .npz file with x_train, y_train, x_test, y_test")
register_dataset("folder", partial(images.load_images, kind="folder", listing=images.folder_items), takes_path=True,
                 help="PATH/train/<class>/* and PATH/test/<class>/* (or val/) image files")
register_dataset("tinyimagenet", partial(images.load_images, kind="tinyimagenet", listing=images.tinyimagenet_items),
                 takes_path=True, help="the official Tiny ImageNet folder (tiny-imagenet-200/)")  # fmt: skip


def dataset_kinds() -> tuple[str, ...]:
    """The registered kinds as users write them: ``cifar10``, ..., ``npz:PATH``, ..."""
    return tuple(k.usage for k in REGISTRY.values())


def kinds_text() -> str:
    """One line per data-set kind: its usage and what it reads (for help texts)."""
    return "\n".join(f"  {k.usage:<18} {k.help}" for k in REGISTRY.values())


def parse_spec(spec: object) -> tuple[DatasetKind, str]:
    """``(kind, path)`` of a spec; raises :class:`DatasetSpecError` with the list of kinds."""
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetSpecError(f"A data set is named by a non-empty string, got {spec!r}; use one of "
                               f"{', '.join(dataset_kinds())} (docs/method.md, 'Data')")  # fmt: skip
    name, sep, path = spec.partition(":")
    kind = REGISTRY.get(name.strip().lower())
    if kind is None:
        raise DatasetSpecError(f"Unknown dataset {spec!r}; use one of {', '.join(dataset_kinds())} "
                               "(`dainv data --help` describes each)")  # fmt: skip
    if kind.takes_path and not path.strip():
        raise DatasetSpecError(f"Dataset {spec!r} names no file or folder. Use {kind.usage}, e.g. "
                               f"{kind.name}:data/mine{'.npz' if kind.name == 'npz' else ''} ({kind.help}).")  # fmt: skip
    if not kind.takes_path and sep:
        raise DatasetSpecError(f"Dataset {spec!r}: {kind.name} takes no path (it is read from the data root: "
                               f"--data-root or DAINV_DATA). Write just {kind.name!r}.")  # fmt: skip
    return kind, path.strip()


def check_dataset_spec(spec: object) -> None:
    """:class:`DatasetSpecError` unless ``spec`` names a kind; reads no file (valid on any machine)."""
    parse_spec(spec)


def load_dataset(spec: str, root: str | Path | None = None, download: bool | None = None, *, image_size: int | None = None,
                 skip_bad: bool = False, allow_missing_classes: bool = False, workers: int | None = None) -> Dataset:  # fmt: skip
    """A data set fully in memory (CPU, uint8 NCHW, int64 labels), or a :class:`DataError` saying what and how to
    fix. ``download``: :func:`dainv.data.cifar.may_download`. Image kinds: ``image_size`` resizes to N × N
    (``None``: their one own size), ``skip_bad`` leaves unreadable images out (``Dataset.skipped``), ``workers``:
    decoding processes (``$DAINV_DATA_WORKERS``, else up to 8)."""
    kind, path = parse_spec(spec)
    options = LoadOptions(root, download, image_size, skip_bad, allow_missing_classes, workers)
    ds = kind.load(spec if kind.takes_path else kind.name, path, options)
    _, h, w = ds.image_shape
    if image_size is not None and (h, w) != (image_size, image_size):
        # a loader that cannot resize: say so rather than ignore the setting
        raise DataError(f"Data set {spec!r} has {w}x{h} images and {kind.usage} data are not resized, but "
                        f"image_size (data.image_size) is {image_size!r}. Leave data.image_size unset (null) for "
                        f"{kind.usage}; it applies to folder:PATH and tinyimagenet:PATH.")  # fmt: skip
    return ds


def load_configured(data_cfg: Any, dataset: str | None = None, root: str | None = None,
                    download: bool | None = None) -> Dataset:  # fmt: skip
    """The data set of a run's ``data`` settings, optionally with another spec or root."""
    return load_dataset(dataset or data_cfg.dataset, root or data_cfg.root, download,
                        image_size=data_cfg.image_size, skip_bad=data_cfg.skip_bad)  # fmt: skip
