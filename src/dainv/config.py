"""One typed configuration for a run: presets (YAML in ``configs/``), files and ``key=value`` overrides.

Defaults are SPEC's defaults: a bare :class:`RunConfig` is the paper's DAI arm (SPEC §5).
Every deviation is an explicit field, so the resolved ``config.yaml`` of a run says exactly
what produced it. :func:`validate` checks everything before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
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
]

#: The arms of SPEC §5: views per seed (M) and the DAI weight α.
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"views": 1, "alpha": 0.0},
    "dai": {"views": 8, "alpha": 0.1},
    "control": {"views": 8, "alpha": 0.0},
}


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


def _merge(obj: Any, updates: dict[str, Any], where: str) -> Any:
    """Return a copy of dataclass ``obj`` with ``updates`` (nested dicts) applied; unknown keys raise."""
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, val in updates.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(
                f"unknown config key '{path}'; valid keys here: {', '.join(sorted(known))}"
            )
        cur = getattr(obj, key)
        if is_dataclass(cur):
            if not isinstance(val, dict):
                raise ConfigError(f"config key '{path}' is a section; give a mapping, got {val!r}")
            changes[key] = _merge(cur, val, path)
        else:
            changes[key] = _coerce(val, cur, path)
    return dataclasses.replace(obj, **changes)


def _coerce(val: Any, cur: Any, path: str) -> Any:
    """Check ``val`` against the type of the current value ``cur`` (ints accepted for floats)."""
    if val is None:
        return None
    if isinstance(cur, bool):
        if not isinstance(val, bool):
            raise ConfigError(f"config key '{path}' takes true/false, got {val!r}")
        return val
    if isinstance(cur, float) or (cur is None and isinstance(val, float)):
        if isinstance(val, bool) or not isinstance(val, (int, float)):
            raise ConfigError(f"config key '{path}' takes a number, got {val!r}")
        return float(val)
    if isinstance(cur, int):
        if isinstance(val, bool) or not isinstance(val, int):
            raise ConfigError(f"config key '{path}' takes an integer, got {val!r}")
        return val
    if path == "train.layers":
        if val == "auto" or (isinstance(val, (list, tuple)) and all(isinstance(v, str) for v in val)):
            return val if val == "auto" else list(val)
        raise ConfigError(f"config key '{path}' takes 'auto' or a list of layer names, got {val!r}")
    if isinstance(cur, dict):
        if not isinstance(val, dict):
            raise ConfigError(f"config key '{path}' takes a mapping, got {val!r}")
        return dict(val)
    if isinstance(cur, list):
        if not isinstance(val, (list, tuple)):
            raise ConfigError(f"config key '{path}' takes a list, got {val!r}")
        return list(val)
    if isinstance(cur, str) and not isinstance(val, str):
        raise ConfigError(f"config key '{path}' takes a string, got {val!r}")
    return val


def from_dict(d: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}")
    return _merge(base or RunConfig(), d, "")


PRESET_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a preset (``configs/NAME.yaml``)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{name}'; available presets: {', '.join(list_presets())} "
            f"(in {PRESET_DIR})"
        )
    return _read_yaml(path)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``3``, ``0.1``, ``[1,2]``, ``true``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value, e.g. train.epochs=10")
        key, raw = item.split("=", 1)
        try:
            val = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            val = raw
        nested: dict[str, Any] = {}
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = val
        cfg = from_dict(nested, cfg)
    return cfg


def apply_arm(cfg: RunConfig, arm: str) -> RunConfig:
    """Set views and α for one of :data:`ARMS`."""
    if arm not in ARMS:
        raise ConfigError(f"unknown arm '{arm}'; choose from {', '.join(ARMS)}")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **ARMS[arm]))


def load_config(
    preset: str | None = None,
    files: list[str | Path] = (),
    overrides: list[str] = (),
    arm: str | None = None,
) -> RunConfig:
    """Defaults ← preset ← YAML files ← arm ← ``key=value`` overrides, then :func:`validate`."""
    cfg = RunConfig()
    if preset:
        raw = load_preset(preset)
        raw.pop("arms", None)  # reproduce's list of arms, not a run setting
        cfg = from_dict(raw, cfg)
    for f in files:
        cfg = from_dict(_read_yaml(Path(f)), cfg)
    if arm:
        cfg = apply_arm(cfg, arm)
    cfg = apply_overrides(cfg, list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting and how to fix it."""
    from dainv.augment import SCHEMES
    from dainv.models import MODELS

    t, e, d, m, a = cfg.train, cfg.eval, cfg.data, cfg.model, cfg.augment

    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"invalid setting {key}: {msg}")

    if t.epochs <= 0:
        bad("train.epochs", f"must be a positive number of epochs, got {t.epochs}")
    if t.batch_size <= 0:
        bad("train.batch_size", f"must be > 0, got {t.batch_size}")
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
    if not 0 <= t.momentum < 1:
        bad("train.momentum", f"must be in [0, 1), got {t.momentum}")
    if t.weight_decay < 0:
        bad("train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    if t.lr_factor <= 0:
        bad("train.lr_factor", f"must be > 0, got {t.lr_factor}")
    if any(not isinstance(x, int) or x <= 0 for x in t.milestones) or t.milestones != sorted(
        t.milestones
    ):
        bad("train.milestones", f"must be increasing positive epoch numbers, got {t.milestones}")
    if not 0 <= t.alpha < 1:
        bad("train.alpha", f"must be in [0, 1) (the CE term weighs 1 − alpha), got {t.alpha}")
    if t.alpha > 0 and t.views < 2:
        bad("train.alpha", "the DAI loss needs several views per seed: set train.views >= 2 or alpha=0")
    if t.alpha_ratio <= 0:
        bad("train.alpha_ratio", f"must be > 0, got {t.alpha_ratio}")
    if not t.layers:
        bad("train.layers", "name at least one layer, or auto")
    if t.layers != "auto" and len(set(t.layers)) != len(t.layers):
        bad("train.layers", f"repeated layer names in {t.layers}")
    if t.denominator not in ("all", "same_class"):
        bad("train.denominator", f"must be 'all' or 'same_class', got {t.denominator!r}")
    if t.precision not in ("fp32", "bf16", "auto"):
        bad("train.precision", f"must be 'fp32', 'bf16' or 'auto', got {t.precision!r}")
    if t.monitor_batches < 0 or t.log_every < 1 or t.checkpoint_every < 1:
        bad("train", "monitor_batches must be >= 0, log_every and checkpoint_every >= 1")
    if any(isinstance(e, bool) or not isinstance(e, int) or not 1 <= e <= t.epochs for e in t.keep_epochs):
        bad("train.keep_epochs", f"must list epochs between 1 and train.epochs ({t.epochs}), got {t.keep_epochs}")
    if m.name not in MODELS and ":" not in m.name:
        bad("model.name", f"unknown model {m.name!r}; available: {sorted(MODELS)} or module.path:factory")
    if m.width <= 0:
        bad("model.width", f"must be > 0, got {m.width}")
    if t.layers != "auto":
        # Layer names belong to the model: build it on the meta device (no memory, no compute).
        import torch

        from dainv.models import build_model

        with torch.device("meta"):
            net = build_model(m.name, 10, 3, **model_kwargs(m))
        unknown = [x for x in t.layers if x not in net.tap_names]
        if unknown:
            bad("train.layers", f"unknown layer name(s) {unknown}; {m.name} has {list(net.tap_names)}")
    if a.scheme not in SCHEMES:
        bad("augment.scheme", f"unknown scheme {a.scheme!r}; choose from {sorted(SCHEMES)}")
    if a.sampling not in ("truncnorm", "uniform"):
        bad("augment.sampling", f"must be 'truncnorm' or 'uniform', got {a.sampling!r}")
    if a.interpolation not in ("nearest", "bilinear"):
        bad("augment.interpolation", f"must be 'nearest' or 'bilinear', got {a.interpolation!r}")
    if e.scheme not in SCHEMES:
        bad("eval.scheme", f"unknown scheme {e.scheme!r}; choose from {sorted(SCHEMES)}")
    if e.transforms < 1 or e.tta_views < 1 or e.batch_size < 1:
        bad("eval", "transforms, tta_views and batch_size must be >= 1")
    if not (d.dataset in ("cifar10", "cifar100") or d.dataset.startswith("npz:")):
        bad("data.dataset", f"unknown data set {d.dataset!r}; use cifar10, cifar100 or npz:PATH")
    for key in ("n_train", "n_test"):
        v = getattr(d, key)
        if v is not None and v < 1:
            bad(f"data.{key}", f"must be >= 1 or null (all), got {v}")
    if d.n_train is not None and d.n_train < t.batch_size // t.views:
        bad("data.n_train", f"{d.n_train} images cannot fill {t.batch_size // t.views} seeds per step")
    if not (cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda")):
        bad("device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")


def model_kwargs(m: ModelConfig) -> dict[str, Any]:
    """Constructor arguments of the configured model: ``kwargs``, plus ``width`` when set."""
    return {**m.kwargs, **({"width": m.width} if m.width != 1.0 else {})}


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
