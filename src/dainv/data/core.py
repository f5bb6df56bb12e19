"""The in-memory :class:`Dataset`, the one check of loaded arrays and labels, and dainv's folders."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from dainv.errors import DataError

ENV_VAR = "DAINV_DATA"
MAX_CLASSES = 100_000
"""Upper bound on the number of classes of any data set (a label of 10**6 is a typo, not data)."""


@dataclass(eq=False, repr=False)
class Dataset:
    """Both splits: ``x_*`` uint8 ``(N, C, H, W)``, ``y_*`` int64 in ``[0, num_classes)``; ``source``
    the path read, ``notes`` remarks to print once, ``skipped`` ``"PATH: reason"`` (``skip_bad``)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: list[str]
    source: str
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """A copy with all four tensors on ``device`` (e.g. once, before training on a GPU)."""
        return replace(self, **{k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")})

    def subset(self, n_train: int | None, n_test: int | None) -> Dataset:
        """The first ``n_train`` / ``n_test`` images (``None``: all), classes interleaved where a split is stored
        in class blocks. No seed: every arm and seed sees the same images (docs/method.md §5, "Data subsets")."""
        parts = {}
        for split, n, word in (("train", n_train, "training"), ("test", n_test, "test")):
            x, y, arg = getattr(self, f"x_{split}"), getattr(self, f"y_{split}"), f"n_{split}"
            if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))):
                raise DataError(f"{arg} must be a whole number or None, got {n!r}.")
            if n is not None and not 1 <= n <= len(y):
                raise DataError(f"Cannot take {n} {word} images from {self.name}: it has {len(y)}. Use a value "
                                f"from 1 to {len(y)} for {arg} (or leave it unset for all).")  # fmt: skip
            parts[f"x_{split}"], parts[f"y_{split}"] = _take(x, y, len(y) if n is None else int(n))
        return replace(self, **parts)

    def digest(self, split: str) -> str:
        """SHA-256 of one split's images, labels and shapes: the data's identity, whatever the files."""
        h = hashlib.sha256()
        for t in (getattr(self, f"x_{split}"), getattr(self, f"y_{split}")):
            a = (t if t.device.type == "cpu" else t.cpu()).detach().contiguous()
            h.update(repr((tuple(a.shape), str(a.dtype))).encode())
            h.update(memoryview(a.numpy()).cast("B"))
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"num_classes={self.num_classes}, device={self.x_train.device}, source={self.source!r})")


@dataclass(frozen=True)
class LoadOptions:
    """What every loader may use (each ignores the rest; meanings: :func:`~dainv.data.load_dataset`)."""

    root: str | Path | None = None
    download: bool | None = None
    image_size: int | None = None
    skip_bad: bool = False
    allow_missing_classes: bool = False
    workers: int | None = None


def _take(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` images of a split that :meth:`Dataset.subset` takes."""
    edge = y[1:] != y[:-1]  # where the next class block starts
    if n == len(y) or not (edge.any() and int(edge.sum()) + 1 == len(torch.unique(y))):
        return x[:n], y[:n]  # all of it, or not stored in class blocks: the first n
    zero = y.new_zeros(1, dtype=torch.long)
    block = torch.cat([zero, edge.long().cumsum(0)])  # the class block of each image
    starts = torch.cat([zero, torch.nonzero(edge).flatten() + 1])
    rank = torch.arange(len(y), device=y.device) - starts[block]  # position within its class
    idx = torch.argsort(rank * len(starts) + block)[:n]  # round robin over the class blocks
    return x.index_select(0, idx).contiguous(), y.index_select(0, idx)


def images_to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (``x / 255``) on the same device; the model's input scale."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"images_to_float expects a uint8 tensor, got {x_uint8.dtype}")
    if torch.get_default_dtype() == torch.float32:
        # One kernel: the division of uint8 by a float scalar is computed in float32 on the
        # exactly converted bytes, the same bits as ``.to(float32).div_(255.0)``.
        return torch.div(x_uint8, 255.0)
    return x_uint8.to(torch.float32).div_(255.0)


def random_dataset(n_train: int, n_test: int, num_classes: int = 10, seed: int = 0) -> Dataset:
    """CIFAR-10-shaped random uint8 images and labels, no disk: for benchmarks and smoke tests."""
    g = torch.Generator().manual_seed(seed)
    x_train = torch.randint(0, 256, (n_train, 3, 32, 32), dtype=torch.uint8, generator=g)
    y_train = torch.randint(0, num_classes, (n_train,), generator=g)
    x_test = torch.randint(0, 256, (n_test, 3, 32, 32), dtype=torch.uint8, generator=g)
    y_test = torch.randint(0, num_classes, (n_test,), generator=g)
    return Dataset("random-cifar10-shape", x_train, y_train, x_test, y_test, num_classes,
                   [str(i) for i in range(num_classes)], "random")  # fmt: skip


def default_data_root() -> Path:
    """Per-user cache folder: ``$XDG_CACHE_HOME/dainv``, else ``~/.cache/dainv``."""
    xdg = Path(os.environ.get("XDG_CACHE_HOME", "")).expanduser()
    return (xdg if xdg.is_absolute() else Path.home() / ".cache") / "dainv"


def user_cache_dir() -> Path:
    """Where dainv keeps files derived from data (decoded images, verified checksums), never beside it."""
    return default_data_root() / "cache"


def resolve_root(root: str | Path | None) -> tuple[Path, str]:
    """The data root (:func:`resolve_data_root`) and, for error messages, where that choice came from."""
    if root is not None and str(root) != "":
        return Path(root).expanduser().absolute(), "given explicitly (--data-root)"
    if env := os.environ.get(ENV_VAR, ""):
        return Path(env).expanduser().absolute(), f"from the {ENV_VAR} environment variable"
    return default_data_root().absolute(), f"the default; override it with --data-root or the {ENV_VAR} environment variable"


def resolve_data_root(root: str | Path | None) -> Path:
    """The folder CIFAR is looked for in: ``root`` if given, else ``$DAINV_DATA``, else the default."""
    return resolve_root(root)[0]


def check_labels(y_train: np.ndarray, y_test: np.ndarray, *, where: str, hint: str = "",
                 allow_missing_classes: bool = False, num_classes: int | None = None) -> int:  # fmt: skip
    """The number of classes C (max label + 1, or ``num_classes``) of valid labels ``0..C-1``, 2 <= C <=
    min(100,000, training images), each in the training split unless ``allow_missing_classes`` (no wrap-around)."""
    top = max(int(y.max()) if len(y) else -1 for y in (y_train, y_test))
    k, n = top + 1 if num_classes is None else num_classes, len(y_train)
    negative = [(split, int(y.min())) for split, y in (("train", y_train), ("test", y_test)) if len(y) and y.min() < 0]
    if negative:
        what = f"key 'y_{negative[0][0]}' has negative labels (found {negative[0][1]}); labels must be 0..K-1"
    elif top >= k:
        what = f"label {top} is out of range 0..{k - 1}"
    elif k > MAX_CLASSES:
        what = (f"the largest label is {top}, which would mean {k:,} classes; dainv accepts at most {MAX_CLASSES:,}. "
                "Labels must be class indices 0..C-1 (renumber them, e.g. with numpy.unique(y, return_inverse=True))")
    elif k < 2:
        what = "all labels are 0; a classification dataset needs at least 2 classes"
    elif k > n:
        what = (f"the largest label is {top}, i.e. {k} classes, but there are only {n} training images; labels must "
                "be class indices 0..C-1 with C <= the number of training images")
    elif not allow_missing_classes and len(
        missing := np.flatnonzero(np.bincount(np.asarray(y_train, dtype=np.int64), minlength=k) == 0)
    ):
        shown = ", ".join(str(int(i)) for i in missing[:10]) + (", ..." if len(missing) > 10 else "")
        what = (f"{len(missing)} of the {k} classes 0..{k - 1} have no training image (labels {shown}). Labels must "
                "be contiguous 0..C-1, each present in the training split: renumber them (numpy.unique(y, "
                "return_inverse=True)), or pass allow_missing_classes=True if the gaps are intended")
    else:
        return k
    raise data_error(where, what, hint)


def data_error(where: str, what: str, hint: str = "") -> DataError:
    """The form of every data-check error: ``"{where}: {what}."`` and, on its own line, ``hint``."""
    return DataError(f"{where}: {what}.\n{hint}" if hint else f"{where}: {what}.")


def from_arrays(name: str, arrays: dict[str, np.ndarray], *, where: str, source: str, hint: str = "",
                classes: list[str] | None = None, channels_last: bool = False, allow_missing_classes: bool = False,
                notes: list[str] | None = None, skipped: list[str] | None = None) -> Dataset:  # fmt: skip
    """The :class:`Dataset` of numpy arrays (NHWC if ``channels_last``), arrays and labels checked once."""
    layout = "(N, H, W, C)" if channels_last else "(N, C, H, W)"
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            what = f"key 'x_{split}' has dtype {x.dtype}, expected uint8 (pixel values 0..255)"
        elif x.ndim != 4 or x.shape[3 if channels_last else 1] not in (1, 3):
            what = f"key 'x_{split}' has shape {x.shape}, expected {layout} with C = 1 or 3"
        elif x.shape[0] < 1:
            what = f"key 'x_{split}' holds no images"
        elif y.ndim != 1 or y.dtype.kind not in "iu":
            what = f"key 'y_{split}' has dtype {y.dtype} and shape {y.shape}, expected integers of shape (N,)"
        elif len(y) != len(x):
            what = f"key 'y_{split}' has {len(y)} labels but 'x_{split}' has {len(x)} images"
        else:
            continue
        raise data_error(where, what, hint)
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise data_error(where, f"'x_train' images are {arrays['x_train'].shape[1:]} ({layout[4:-1]}) but 'x_test' "
                            f"images are {arrays['x_test'].shape[1:]}", hint)  # fmt: skip
    k = check_labels(arrays["y_train"], arrays["y_test"], where=where, hint=hint,
                     allow_missing_classes=allow_missing_classes,
                     num_classes=None if classes is None else len(classes))  # fmt: skip
    x_train, x_test = (torch.from_numpy(np.ascontiguousarray(arrays[key].transpose(0, 3, 1, 2) if channels_last
                                                             else arrays[key])) for key in ("x_train", "x_test"))
    y_train, y_test = (torch.from_numpy(arrays[key].astype(np.int64)) for key in ("y_train", "y_test"))
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes=k,
                   classes=list(classes) if classes is not None else [str(i) for i in range(k)],
                   source=source, notes=notes or [], skipped=skipped or [])  # fmt: skip
