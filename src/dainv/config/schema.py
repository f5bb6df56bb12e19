"""The settings' shape: the :class:`RunConfig` dataclasses, the arms and protocols tables, and
mapping → config conversion with types checked key by key (:func:`from_dict`, :func:`to_dict`).

Defaults are the paper's: a bare :class:`RunConfig` is the paper's DAI arm (docs/method.md §5).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import yaml

from dainv.errors import ConfigError

#: The arms (docs/method.md §5): views per seed (M) and the DAI weight α. The one table of arms:
#: the CLI's choices, reproduce and the report import it.
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"views": 1, "alpha": 0.0},
    "dai": {"views": 8, "alpha": 0.1},
    "control": {"views": 8, "alpha": 0.0},
}

#: ``method.protocol``: the settings each protocol fixes (docs/method.md, "Paper text vs the
#: authors' code"). ``paper`` follows the paper's text (the defaults); ``authors_code`` sets
#: every choice of the authors' released code at once.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {},
    "authors_code": {"train.denominator": "same_class", "eval.scheme": "heavier_eval_authors"},
}

#: The only keys that take null (their default is null: "all" / "the data set's own").
NULLABLE = frozenset({"data.root", "data.n_train", "data.n_test", "data.image_size"})


@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | npz:PATH | folder:PATH | tinyimagenet:PATH
    root: str | None = None  # None: $DAINV_DATA, else the per-user cache
    n_train: int | None = None  # first n training images (None: all)
    n_test: int | None = None  # first n test images (None: all)
    image_size: int | None = None  # folder data: resize to this (None: the images' own size)
    skip_bad: bool = False  # folder data: skip unreadable images (counted) instead of failing


@dataclass
class ModelConfig:
    name: str = "allcnnc"  # a registered model, or module.path:factory
    width: float = 1.0  # allcnnc / allcnn-imagenet channel multiplier
    kwargs: dict[str, Any] = field(default_factory=dict)  # more constructor arguments


@dataclass
class AugmentConfig:
    scheme: str = "heavier"
    sampling: str = "truncnorm"  # truncnorm (authors' configs) | uniform (paper's wording)
    interpolation: str = "bilinear"  # bilinear (the authors' pipeline) | nearest


@dataclass
class TrainConfig:
    epochs: int = 350
    batch_size: int = 128  # samples per step, views included (K seeds × M views)
    views: int = 8  # M
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    milestones: list[int] = field(default_factory=lambda: [200, 250, 300])
    lr_factor: float = 0.1
    alpha: float = 0.1  # Σ_l α_l (Eq. 4)
    alpha_ratio: float = 10.0  # α_last / α_first
    layers: str | list[str] = "auto"  # auto: the model's tap_names (input excluded)
    denominator: str = "all"  # all (paper) | same_class (authors' code)
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 on GPUs and CPUs with native bf16)
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False  # DDP only
    monitor_batches: int = 2  # fixed K×8-view batches measuring L_l without gradient
    log_every: int = 50  # steps between host syncs (progress bar, NaN check)
    checkpoint_every: int = 1  # epochs
    keep_epochs: list[int] = field(default_factory=list)  # also keep checkpoints/epoch-NNNN.pt
    eval_every: int = 1  # epochs between test-accuracy passes (the last epoch always)
    monitor_every: int = 1  # epochs between L_l monitoring passes (the last epoch always)
    cuda_graphs: bool = False  # capture the whole training step as a CUDA graph
    tf32: bool = True  # fp32 convolutions/matmuls in TF32 on Ampere and newer GPUs


@dataclass
class EvalConfig:
    scheme: str = "heavier_eval"
    transforms: int = 5  # transformations per test image (Eq. 2)
    tta_views: int = 10  # light views for the mean-softmax accuracy
    batch_size: int = 500
    per_transform: bool = False
    seed: int = 0


@dataclass
class MethodConfig:
    # paper: the paper's text; authors_code: the authors' released code's choices at once
    # (Eq. 3 denominator over same-class pairs, heavier_eval contrast {0.25, 1.25}).
    protocol: str = "paper"


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    description: str = ""


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


# ---------------------------------------------------------------------------------------------
# Mapping → RunConfig, with types checked key by key


def _at(source: str | None) -> str:
    return f" (in {source})" if source else ""


def _merge(
    obj: Any, updates: dict[str, Any], where: str, source: str | None, record: dict | None
) -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` (nested dicts) applied; unknown keys raise."""
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, val in updates.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise ConfigError(
                f"unknown config key '{path}'; valid keys here: {', '.join(sorted(known))}{_at(source)}"
            )
        cur = getattr(obj, key)
        if is_dataclass(cur):
            if val is None:
                raise ConfigError(
                    f"config section '{path}' is empty{_at(source)}; give its keys or delete the line"
                )
            if not isinstance(val, dict):
                raise ConfigError(
                    f"config key '{path}' is a section; give a mapping of its keys, got {val!r}{_at(source)}"
                )
            changes[key] = _merge(cur, val, path, source, record)
        else:
            changes[key] = _coerce(val, cur, path, source)
            if record is not None:
                record[path] = source or "a config mapping"
    return dataclasses.replace(obj, **changes)


#: Expected kinds of the nullable keys (their default, None, says nothing).
_NULLABLE_KIND = {"data.root": "", "data.n_train": 0, "data.n_test": 0, "data.image_size": 0}


def _finite(val: Any) -> bool:
    try:
        return math.isfinite(val)
    except OverflowError:  # an int too large for a float
        return False


def _as_int(val: Any) -> int | None:
    """``val`` as an int: ints (not bools) and integral finite floats (``1e3``); else None."""
    if isinstance(val, bool):
        return None
    if isinstance(val, int):
        return val
    if isinstance(val, float) and math.isfinite(val) and val.is_integer():
        return int(val)
    return None


def _check_finite(val: Any, path: str, source: str | None) -> None:
    if isinstance(val, float) and not math.isfinite(val):
        raise ConfigError(f"config key '{path}' holds {val}; give a finite number{_at(source)}")
    if isinstance(val, dict):
        for k, v in val.items():
            _check_finite(v, f"{path}.{k}", source)
    if isinstance(val, (list, tuple)):
        for v in val:
            _check_finite(v, path, source)


def _coerce(val: Any, cur: Any, path: str, source: str | None = None) -> Any:
    """Check ``val`` against the type of the current value ``cur`` (ints accepted for floats)."""
    at = _at(source)
    if val is None:
        if path in NULLABLE:
            return None
        shown = yaml.safe_dump(cur, default_flow_style=True).strip().removesuffix("...").strip()
        raise ConfigError(
            f"config key '{path}' has no value{at}; give a value (currently {shown}, e.g. "
            f"--set {path}={shown}) or leave the key out to keep it"
        )
    if cur is None:
        cur = _NULLABLE_KIND.get(path, val)
    if isinstance(cur, bool):
        if not isinstance(val, bool):
            raise ConfigError(f"config key '{path}' takes true/false, got {val!r}{at}")
        return val
    if isinstance(cur, float):
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise ConfigError(
                f"config key '{path}' takes a number, got {val!r}{at}; e.g. 0.01 or 1e-3"
            )
        if not _finite(val):
            raise ConfigError(f"config key '{path}' takes a finite number, got {val!r}{at}")
        return float(val)
    if isinstance(cur, int):
        n = _as_int(val)
        if n is None:
            raise ConfigError(f"config key '{path}' takes an integer, got {val!r}{at}")
        return n
    return _coerce_other(val, cur, path, source, at)


def _name(v: Any) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # a Sequential's layers are named 0, 1, 2 ...
    return v.strip().strip("'\"").strip() if isinstance(v, str) else None


def layer_list(val: Any) -> str | list[str] | None:
    """``"auto"`` or the layer names that ``val`` spells, else ``None``: one syntax for
    ``train.layers`` (in a file or ``--set``) and ``dainv evaluate --layers`` — a list
    (``[conv7, conv8]``) or comma-separated text (``conv7,conv8``, also in brackets)."""
    if isinstance(val, str) and val.strip() == "auto":
        return "auto"
    if isinstance(val, str):
        text = val.strip()
        val = text[1:-1].split(",") if text.startswith("[") and text.endswith("]") else text.split(",")
    elif isinstance(val, int) and not isinstance(val, bool):
        val = [val]
    if not isinstance(val, (list, tuple)):
        return None
    names = [_name(v) for v in val]
    return names if names and all(names) else None


def _coerce_other(val: Any, cur: Any, path: str, source: str | None, at: str) -> Any:
    """:func:`_coerce` for the layer list, mappings, epoch lists and strings."""
    if path == "train.layers":
        names = layer_list(val)
        if names is not None:
            return names
        raise ConfigError(
            f"config key '{path}' takes 'auto' or layer names, got {val!r}{at}; "
            "e.g. train.layers=[conv7,conv8,conv9] or train.layers=conv7,conv8,conv9"
        )
    if isinstance(cur, dict):
        if not isinstance(val, dict):
            raise ConfigError(f"config key '{path}' takes a mapping, got {val!r}{at}")
        if not all(isinstance(k, str) for k in val):
            raise ConfigError(
                f"config key '{path}' takes a mapping with names as keys, got {val!r}{at}"
            )
        _check_finite(val, path, source)
        return dict(val)
    if isinstance(cur, list):  # milestones, keep_epochs: epoch numbers
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"config key '{path}' takes a list, e.g. [50, 100], got {val!r}{at}")
        ints = [_as_int(v) for v in val]
        if any(n is None for n in ints):
            raise ConfigError(
                f"config key '{path}' takes a list of integers (epoch numbers), got {val!r}{at}"
            )
        return ints
    if isinstance(cur, str) and not isinstance(val, str):
        raise ConfigError(f"config key '{path}' takes a string, got {val!r}{at}")
    return val


def from_dict(
    d: dict[str, Any],
    base: RunConfig | None = None,
    source: str | None = None,
    record: dict[str, str] | None = None,
) -> RunConfig:
    """A :class:`RunConfig` from a (nested) mapping over ``base`` (default: the defaults).

    ``source`` names the mapping in error messages (a mapping from :func:`_read_yaml` knows its
    file); ``record``, when given, gets ``{key: source}`` for every key set.
    """
    source = source or getattr(d, "source", None)
    if not isinstance(d, dict):
        raise ConfigError(
            f"a config must be a mapping of keys to values, got {type(d).__name__}{_at(source)}"
        )
    return _merge(base or RunConfig(), d, "", source, record)


#: Settings that do not change a run's result (only where and how fast it runs, what it logs and
#: keeps): the one "same run?" rule, :func:`differences`, lets them differ.
RESULT_NEUTRAL = frozenset({
    "name", "description", "device", "data.root", "train.compile", "train.cuda_graphs",
    "train.log_every", "train.checkpoint_every", "train.keep_epochs", "train.eval_every", "train.monitor_every",
})  # fmt: skip


def differences(mine: Any, theirs: Any, *, length: bool = True) -> list[tuple[str, Any, Any]]:
    """The one "same run?" rule: ``(key, theirs, mine)`` for each result-changing setting in
    which two configs (:class:`RunConfig` or ``to_dict`` mappings) differ; none means the same
    run. ``length=False``: ``train.epochs`` may differ too (a resume that extends the run).
    Resume, checkpoint loading, reproduce and the report ask it; :data:`RESULT_NEUTRAL` is what
    it lets differ."""
    a, b = (flat_items(c if isinstance(c, dict) else to_dict(c)) for c in (mine, theirs))
    skip = RESULT_NEUTRAL if length else RESULT_NEUTRAL | {"train.epochs"}
    return [(k, b.get(k), a.get(k)) for k in dict.fromkeys([*a, *b]) if k not in skip and a.get(k) != b.get(k)]


def flat_items(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}`` (an empty mapping stays one value),
    for comparing two configs key by key."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_items(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _get(cfg: RunConfig, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _set(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    section, name = key.split(".")
    return dataclasses.replace(
        cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})}
    )


def model_kwargs(m: ModelConfig) -> dict[str, Any]:
    """Constructor arguments of the configured model: ``kwargs``, plus ``width`` when set."""
    return {**m.kwargs, **({"width": m.width} if m.width != 1.0 else {})}
