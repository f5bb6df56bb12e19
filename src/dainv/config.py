"""One typed configuration for a run: presets (YAML in ``configs/``), files and ``key=value`` overrides.

Defaults are the paper's: a bare :class:`RunConfig` is the paper's DAI arm (docs/method.md §5).
Every deviation is an explicit field, so the resolved ``config.yaml`` of a run says exactly
what produced it. :func:`validate` checks everything before any work starts, and every error
says what is wrong, where it was set (a file, a preset or ``--set``) and how to fix it.

YAML is read with :class:`ConfigLoader`: PyYAML's safe loader that also reads ``1e-3`` as a
number (YAML 1.1 wants a dot) and refuses a key given twice in one mapping.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from dainv.errors import ConfigError

__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "AugmentConfig",
    "TrainConfig",
    "EvalConfig",
    "MethodConfig",
    "ARMS",
    "PRESET_DIR",
    "list_presets",
    "load_preset",
    "load_config",
    "apply_overrides",
    "apply_arm",
    "validate",
    "to_dict",
    "from_dict",
    "dump_yaml",
    "model_kwargs",
    "PROTOCOLS",
    "NULLABLE",
    "ConfigLoader",
    "parse_yaml",
    "resolve_protocol",
]

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
# YAML: numbers with exponents, no duplicate keys, UTF-8 only

#: ``1e-3``, ``5E4``, ``-1e-3``: YAML 1.1 (PyYAML) reads a float only with a dot, else a string.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(f"key {key!r} is given twice (lines {first} and {again})")
        self.key, self.first, self.again = key, first, again


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus ``1e-3`` as a float and a refusal of duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if (
                not isinstance(key_node, yaml.ScalarNode)
                or key_node.tag == "tag:yaml.org,2002:merge"
            ):
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def parse_yaml(text: str, where: str = "the YAML text") -> Any:
    """Parse ``text`` with :class:`ConfigLoader`; ``where`` names it in the error messages."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except _DuplicateKey as e:
        lines = f" (lines {e.first} and {e.again})" if e.first != e.again else ""
        raise ConfigError(
            f"{where}: key {e.key!r} is given twice{lines}; "
            "keep one of them (a later one would silently win)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid YAML: {e}") from None


class _Sourced(dict):
    """A mapping read from a file, remembering where from (for error messages)."""

    source: str | None = None


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
    if path == "train.layers":
        if val == "auto" or (
            isinstance(val, (list, tuple)) and all(isinstance(v, str) for v in val)
        ):
            return val if val == "auto" else list(val)
        raise ConfigError(
            f"config key '{path}' takes 'auto' or a list of layer names, got {val!r}{at}; "
            "e.g. train.layers=[conv7,conv8,conv9]"
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


PRESET_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path, source: str | None = None) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); UTF-8 only, no duplicate keys."""
    path = Path(path)
    source = source or f"config file {path}"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{source} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None
    data = parse_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source} must hold a mapping of keys to values, got {type(data).__name__}"
        )
    out = _Sourced(data)
    out.source = source
    return out


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a preset (``configs/NAME.yaml``)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{name}'; available presets: {', '.join(list_presets())} "
            f"(in {PRESET_DIR})"
        )
    return _read_yaml(path, f"preset '{name}'")


def apply_overrides(
    cfg: RunConfig, overrides: list[str], record: dict[str, str] | None = None
) -> RunConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``3``, ``1e-3``, ``[1,2]``, ``true``).

    An empty value (``key=``), ``null`` or ``~`` is null, which only the keys of :data:`NULLABLE` take.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        source = f"--set {item}"
        if not key.strip():
            raise ConfigError(
                f"override '{item}' has no key; write key=value, e.g. train.epochs=10"
            )
        try:
            val = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else None
        except _DuplicateKey:
            parse_yaml(raw, source)  # raises the ConfigError
        except yaml.YAMLError:
            val = raw
        if val is not None and not isinstance(val, str) and _takes_text(cfg, key.strip()):
            val = raw.strip()  # name=123, data.dataset=npz: (YAML would read a number, a mapping)
        nested: dict[str, Any] = {}
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = val
        cfg = from_dict(nested, cfg, source, record)
    return cfg


def _takes_text(cfg: RunConfig, key: str) -> bool:
    """Whether ``key`` holds free text (a string that is not a list of names)."""
    if key == "train.layers":
        return False
    try:
        cur = _get(cfg, key)
    except AttributeError:
        return False
    return isinstance(cur, str) or (cur is None and isinstance(_NULLABLE_KIND.get(key), str))


def apply_arm(cfg: RunConfig, arm: str) -> RunConfig:
    """Set views and α for one of :data:`ARMS`."""
    if arm not in ARMS:
        raise ConfigError(f"unknown arm '{arm}'; choose from {', '.join(ARMS)}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **ARMS[arm]))


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


def resolve_protocol(cfg: RunConfig, record: dict[str, str] | None = None) -> RunConfig:
    """Apply ``method.protocol``'s settings (:data:`PROTOCOLS`).

    A key the protocol sets that was also set explicitly (``record`` says which keys were) to
    another value is an error naming both.
    """
    record = record or {}
    proto = cfg.method.protocol
    if proto not in PROTOCOLS:
        raise ConfigError(
            f"invalid setting method.protocol: must be one of {', '.join(PROTOCOLS)}, got {proto!r}"
            f"{_at(record.get('method.protocol'))}"
        )
    for key, want in PROTOCOLS[proto].items():
        have = _get(cfg, key)
        if have != want and key in record:
            raise ConfigError(
                f"method.protocol={proto} ({record.get('method.protocol', 'default')}) sets {key}={want}, "
                f"but {key}={have} is asked for too ({record[key]}); drop one of the two, or use "
                f"method.protocol=paper and set {key} on its own"
            )
        cfg = _set(cfg, key, want)
    return cfg


def load_config(
    preset: str | None = None,
    files: list[str | Path] = (),
    overrides: list[str] = (),
    arm: str | None = None,
) -> RunConfig:
    """Defaults ← preset ← YAML files ← arm ← ``key=value`` overrides ← protocol, then :func:`validate`.

    Every error names the key, where it was set (preset, file or ``--set``) and what it takes.
    """
    record: dict[str, str] = {}
    cfg = RunConfig()
    if preset:
        raw = load_preset(preset)
        raw.pop("arms", None)  # reproduce's list of arms, not a run setting
        cfg = from_dict(raw, cfg, record=record)
    for f in files:
        cfg = from_dict(_read_yaml(Path(f)), cfg, record=record)
    if arm:
        cfg = apply_arm(cfg, arm)
        record.update({f"train.{k}": f"--arm {arm}" for k in ARMS[arm]})
    cfg = apply_overrides(cfg, list(overrides), record)
    cfg = resolve_protocol(cfg, record)
    try:
        validate(cfg)
    except _SettingError as e:
        if e.key in record:
            raise ConfigError(f"{e} (set in {record[e.key]})") from None
        raise
    return cfg


# ---------------------------------------------------------------------------------------------
# Validation: every setting, before any work starts

MAX_EPOCHS = 10_000
MAX_BATCH = 65_536
MAX_LR = 10.0
MAX_WIDTH = 64.0
MAX_COUNT = 1_000_000_000  # images, steps between events
MAX_SEED = 2**31 - 1


class _SettingError(ConfigError):
    def __init__(self, key: str, msg: str) -> None:
        super().__init__(msg)
        self.key = key


def _walk(obj: Any, prefix: str = ""):
    for f in fields(obj):
        v = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if is_dataclass(v):
            yield from _walk(v, path + ".")
        else:
            yield path, v


def _num(v: Any) -> str:
    """A number for a message: huge integers in short form."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**12:
        return f"{float(v):.3g}" if _finite(v) else f"an integer of {len(str(abs(v)))} digits"
    return f"{v:g}" if isinstance(v, float) else repr(v)


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_dataset(spec: Any) -> str | None:
    """Why ``spec`` is not a data set spec, or None. Asks the data registry when it has one."""
    if not isinstance(spec, str) or not spec:
        return f"give a data set, e.g. cifar10, got {spec!r}"
    from dainv import data as dmod

    check = getattr(dmod, "check_dataset_spec", None)
    if check is not None:
        try:
            check(spec)
        except ValueError as e:
            return str(e)
        return None
    # Fallback until the data registry lands (the lead drops it at merge).
    kind, _, arg = spec.partition(":")
    if spec in ("cifar10", "cifar100") or (kind in ("npz", "folder", "tinyimagenet") and arg):
        return None
    return (
        f"unknown data set {spec!r}; use cifar10, cifar100, npz:PATH, folder:PATH or "
        "tinyimagenet:PATH"
    )


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting and how to fix it."""
    from dainv.augment import SCHEMES
    from dainv.models import MODELS

    t, e, d, m, a = cfg.train, cfg.eval, cfg.data, cfg.model, cfg.augment

    def bad(key: str, msg: str) -> None:
        raise _SettingError(key, f"invalid setting {key}: {msg}")

    for key, v in _walk(cfg):  # NaN and ±inf nowhere
        if isinstance(v, float) and not math.isfinite(v):
            bad(key, f"must be a finite number, got {v}")
        if v is None and key not in NULLABLE:
            bad(key, "has no value; give one or leave the key out to keep the default")

    proto = cfg.method.protocol
    if proto not in PROTOCOLS:
        bad("method.protocol", f"must be one of {', '.join(PROTOCOLS)}, got {proto!r}")
    for key, want in PROTOCOLS[proto].items():
        if _get(cfg, key) != want:
            bad(key, f"method.protocol={proto} needs {key}={want}, got {_get(cfg, key)!r}; "
                f"use method.protocol=paper to set {key} on its own")  # fmt: skip
    if not isinstance(cfg.name, str) or not cfg.name.strip():
        bad("name", f"give the run a name, got {cfg.name!r}")
    for key, v in (("seed", cfg.seed), ("eval.seed", e.seed)):
        if not _int_in(v, 0, MAX_SEED):
            bad(key, f"must be an integer from 0 to {MAX_SEED}, got {_num(v)}")

    if t.epochs <= 0:
        bad("train.epochs", f"must be a positive number of epochs, got {t.epochs}")
    if t.epochs > MAX_EPOCHS:
        bad(
            "train.epochs",
            f"must be at most {MAX_EPOCHS:,} (the paper trains 350), got {_num(t.epochs)}",
        )
    if t.batch_size <= 0:
        bad("train.batch_size", f"must be > 0, got {t.batch_size}")
    if t.batch_size > MAX_BATCH:
        bad(
            "train.batch_size",
            f"must be at most {MAX_BATCH:,} samples per step (the paper: 128), got {_num(t.batch_size)}",
        )
    if t.views < 1:
        bad("train.views", f"must be >= 1 (1 = baseline), got {t.views}")
    if t.batch_size % t.views:
        bad(
            "train.batch_size",
            f"{t.batch_size} samples per step is not divisible by {t.views} views per seed; "
            f"choose a batch size that is a multiple of train.views",
        )
    if not (t.lr > 0 and math.isfinite(t.lr)):
        bad("train.lr", f"must be a positive learning rate, got {t.lr}")
    if t.lr > MAX_LR:
        bad(
            "train.lr",
            f"must be at most {MAX_LR:g} (the paper: 0.01; larger diverges at once), got {t.lr:g}",
        )
    if not 0 <= t.momentum < 1:
        bad("train.momentum", f"must be in [0, 1), got {t.momentum}")
    if not 0 <= t.weight_decay <= 1:
        bad("train.weight_decay", f"must be in [0, 1] (the paper: 0), got {t.weight_decay}")
    if not 0 < t.lr_factor <= 1:
        bad(
            "train.lr_factor",
            f"must be in (0, 1] (the lr is multiplied by it at each milestone), got {t.lr_factor}",
        )
    if any(not _int_in(x, 1, MAX_EPOCHS) for x in t.milestones) or t.milestones != sorted(
        t.milestones
    ):
        bad("train.milestones", f"must be increasing positive epoch numbers, got {t.milestones}")
    if not 0 <= t.alpha < 1:
        bad("train.alpha", f"must be in [0, 1) (the CE term weighs 1 − alpha), got {t.alpha}")
    if t.alpha > 0 and t.views < 2:
        bad(
            "train.alpha",
            "the DAI loss needs several views per seed: set train.views >= 2 or alpha=0",
        )
    if not 0 < t.alpha_ratio <= 1e6:
        bad("train.alpha_ratio", f"must be in (0, 1e6] (the paper: 10), got {t.alpha_ratio}")
    if not t.layers:
        bad("train.layers", "name at least one layer, or auto")
    if t.layers != "auto" and len(set(t.layers)) != len(t.layers):
        bad("train.layers", f"repeated layer names in {t.layers}")
    if t.denominator not in ("all", "same_class"):
        bad("train.denominator", f"must be 'all' or 'same_class', got {t.denominator!r}")
    if t.precision not in ("fp32", "bf16", "auto"):
        bad("train.precision", f"must be 'fp32', 'bf16' or 'auto', got {t.precision!r}")
    if not _int_in(t.monitor_batches, 0, 1000):
        bad("train.monitor_batches", f"must be from 0 (off) to 1000, got {_num(t.monitor_batches)}")
    for key in ("log_every", "checkpoint_every", "eval_every", "monitor_every"):
        if not _int_in(getattr(t, key), 1, MAX_COUNT):
            bad(f"train.{key}", f"must be >= 1, got {_num(getattr(t, key))}")
    # Epochs past train.epochs are allowed: a preset's list holds when --epochs shortens a run,
    # and they are kept if the run is extended.
    if any(not _int_in(x, 1, MAX_EPOCHS) for x in t.keep_epochs):
        bad(
            "train.keep_epochs",
            f"must list epoch numbers from 1 to {MAX_EPOCHS:,}, got {t.keep_epochs}",
        )

    if not isinstance(m.name, str) or (m.name not in MODELS and ":" not in m.name):
        bad(
            "model.name",
            f"unknown model {m.name!r}; available: {sorted(MODELS)} or module.path:factory",
        )
    if m.width <= 0:
        bad("model.width", f"must be > 0, got {m.width}")
    if m.width > MAX_WIDTH:
        bad(
            "model.width",
            f"must be at most {MAX_WIDTH:g} (a channel multiplier; the paper: 1), got {m.width:g}",
        )
    if t.layers != "auto":
        # Layer names belong to the model: build it on the meta device (no memory, no compute).
        import torch

        from dainv.models import build_model

        try:
            with torch.device("meta"):
                net = build_model(m.name, 10, 3, **model_kwargs(m))
        except (TypeError, ValueError) as err:
            bad("model.kwargs", f"cannot build {m.name} with {model_kwargs(m)}: {err}")
        unknown = [x for x in t.layers if x not in net.tap_names]
        if unknown:
            bad(
                "train.layers",
                f"unknown layer name(s) {unknown}; {m.name} has {list(net.tap_names)}",
            )
    if a.scheme not in SCHEMES:
        bad("augment.scheme", f"unknown scheme {a.scheme!r}; choose from {sorted(SCHEMES)}")
    if a.sampling not in ("truncnorm", "uniform"):
        bad("augment.sampling", f"must be 'truncnorm' or 'uniform', got {a.sampling!r}")
    if a.interpolation not in ("nearest", "bilinear"):
        bad("augment.interpolation", f"must be 'nearest' or 'bilinear', got {a.interpolation!r}")
    if e.scheme not in SCHEMES:
        bad("eval.scheme", f"unknown scheme {e.scheme!r}; choose from {sorted(SCHEMES)}")
    for key, hi in (("transforms", 1000), ("tta_views", 1000), ("batch_size", MAX_BATCH)):
        if not _int_in(getattr(e, key), 1, hi):
            bad(f"eval.{key}", f"must be from 1 to {hi:,}, got {_num(getattr(e, key))}")

    why = _check_dataset(d.dataset)
    if why:
        bad("data.dataset", why)
    if d.root is not None and (not isinstance(d.root, str) or not d.root.strip()):
        bad("data.root", f"give a folder, or null for $DAINV_DATA, got {d.root!r}")
    if d.n_train is not None and not _int_in(d.n_train, 1, MAX_COUNT):
        bad("data.n_train", f"must be >= 1 or null (all), got {_num(d.n_train)}")
    if d.n_test is not None and not _int_in(d.n_test, 2, MAX_COUNT):
        bad(
            "data.n_test",
            f"must be >= 2 or null (all), got {_num(d.n_test)}: Eq. 2's denominator is the mean distance "
            "to the other test images (docs/method.md §2)",
        )
    if d.image_size is not None and not _int_in(d.image_size, 8, 4096):
        bad(
            "data.image_size",
            f"must be from 8 to 4096 pixels, or null (the images' own size), got {_num(d.image_size)}",
        )
    if d.n_train is not None and d.n_train < t.batch_size // t.views:
        bad(
            "data.n_train",
            f"{d.n_train} images cannot fill {t.batch_size // t.views} seeds per step",
        )

    from dainv.runtime import resolve_device

    if not isinstance(cfg.device, str):
        bad("device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    try:
        resolve_device(cfg.device)
    except ConfigError as err:
        bad("device", str(err))


def model_kwargs(m: ModelConfig) -> dict[str, Any]:
    """Constructor arguments of the configured model: ``kwargs``, plus ``width`` when set."""
    return {**m.kwargs, **({"width": m.width} if m.width != 1.0 else {})}


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
