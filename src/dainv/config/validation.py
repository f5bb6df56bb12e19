"""Validation: every setting is checked before any work starts (:func:`validate`, its bounds),
and ``method.protocol`` is resolved into the settings it fixes (:func:`resolve_protocol`).

Every error says what is wrong and how to fix it; :func:`dainv.config.load_config` adds where
the setting was made (a file, a preset or ``--set``).
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

from dainv.config.schema import (
    NULLABLE,
    PROTOCOLS,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    _at,
    _finite,
    _get,
    _set,
    model_kwargs,
)
from dainv.errors import ConfigError


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
    """Why ``spec`` is not a data set spec, or None: the data registry is the one judge."""
    from dainv.data import check_dataset_spec

    try:
        check_dataset_spec(spec)
    except ValueError as e:
        return str(e)
    return None


def _bad(key: str, msg: str) -> None:
    raise _SettingError(key, f"invalid setting {key}: {msg}")


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid setting and how to fix it."""
    _check_run(cfg)
    _check_train_schedule(cfg.train)
    _check_train_optimizer(cfg.train)
    _check_train_loss_and_events(cfg.train)
    _check_model(cfg.model, cfg.train)
    _check_augment_and_eval(cfg.augment, cfg.eval)
    _check_data(cfg.data, cfg.train)
    _check_device(cfg.device)


def _check_run(cfg: RunConfig) -> None:
    """No NaN/±inf or null anywhere; the protocol's settings; the name and the seeds."""
    bad, e = _bad, cfg.eval
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


def _check_train_schedule(t: TrainConfig) -> None:
    """Epochs, batch and views."""
    bad = _bad
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


def _check_train_optimizer(t: TrainConfig) -> None:
    """The optimizer and the learning-rate schedule."""
    bad = _bad
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


def _check_train_loss_and_events(t: TrainConfig) -> None:
    """The DAI loss (α, ratio, layers, denominator), precision and the every-N-steps settings."""
    bad = _bad
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


def _check_model(m: ModelConfig, t: TrainConfig) -> None:
    """The model's name and width, and ``train.layers`` against the model's own tap names."""
    from dainv.models import check_model_name

    bad = _bad
    if not isinstance(m.name, str):
        bad("model.name", f"give a model name, got {m.name!r}")
    try:
        check_model_name(m.name)
    except ValueError as err:
        bad("model.name", str(err))
    if m.width <= 0:
        bad("model.width", f"must be > 0, got {m.width}")
    if m.width > MAX_WIDTH:
        bad(
            "model.width",
            f"must be at most {MAX_WIDTH:g} (a channel multiplier; the paper: 1), got {m.width:g}",
        )
    # The options and the layer names belong to the model: build it on the meta device (no
    # memory, no compute; a factory that needs values is built on the CPU).
    from dainv.models import build_model

    layers = None if t.layers == "auto" else t.layers
    try:
        build_model(m.name, 10, 3, layers, shapes_only=True, **model_kwargs(m))
    except (TypeError, ValueError, RuntimeError) as err:
        if layers is not None:  # the layers' fault when the model builds without them
            try:
                build_model(m.name, 10, 3, shapes_only=True, **model_kwargs(m))
            except (TypeError, ValueError, RuntimeError):
                pass
            else:
                bad("train.layers", str(err))
        bad("model", str(err))


def _check_augment_and_eval(a: AugmentConfig, e: EvalConfig) -> None:
    """Augmentation and evaluation schemes and counts."""
    from dainv.augment import SCHEMES

    bad = _bad
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


def _check_data(d: DataConfig, t: TrainConfig) -> None:
    """The data set spec, its folder and the image counts and size."""
    bad = _bad
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


def _check_device(device: Any) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``, and present on this machine."""
    bad = _bad
    from dainv.runtime import resolve_device

    if not isinstance(device, str):
        bad("device", f"must be auto, cpu, cuda or cuda:N, got {device!r}")
    try:
        resolve_device(device)
    except ConfigError as err:
        bad("device", str(err))
