"""Building a run's config: presets (YAML in ``configs/``), files, arms and ``key=value``
overrides, merged in that order by :func:`load_config` and then validated.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from dainv.config.schema import _NULLABLE_KIND, ARMS, RunConfig, _get, from_dict
from dainv.config.validation import _SettingError, resolve_protocol, validate
from dainv.config.yamlio import ConfigLoader, _DuplicateKey, _read_yaml, parse_yaml
from dainv.errors import ConfigError

#: The presets folder: ``src/dainv/presets`` (a link to the repository's ``configs/``).
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"



def read_run_config(path: str | Path) -> RunConfig:
    """A config file — a run's ``config.yaml`` — as a :class:`RunConfig`: strict YAML (UTF-8,
    no duplicate keys), every key and type checked, the file named in every error."""
    return from_dict(_read_yaml(Path(path)))

def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


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
        cfg = from_dict(_nested(key, val), cfg, source, record)
    return cfg


def _nested(key: str, val: Any) -> dict[str, Any]:
    """``a.b.c``, v → ``{a: {b: {c: v}}}``."""
    nested: dict[str, Any] = {}
    node = nested
    parts = str(key).strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = val
    return nested


def _takes_text(cfg: RunConfig, key: str) -> bool:
    """Whether ``key`` holds free text (a string that is not a list of names)."""
    if key == "train.layers":
        return False
    try:
        cur = _get(cfg, key)
    except AttributeError:
        return False
    return isinstance(cur, str) or (cur is None and isinstance(_NULLABLE_KIND.get(key), str))


#: A preset's keys for ``dainv reproduce``, not run settings: the arms it trains, its arm
#: variants and its extra evaluation schemes.
REPRODUCE_KEYS = ("arms", "variants", "eval_schemes")


def run_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """A preset's mapping without :data:`REPRODUCE_KEYS`: what a run's config is built from
    (a copy of the same type: the mapping read from a file remembers where it came from)."""
    out = copy.copy(raw)
    for key in REPRODUCE_KEYS:
        out.pop(key, None)
    return out


def preset_variants(preset: str | dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A preset's arm variants: ``{name: {"arm": base arm, "set": {key: value}}}`` — an arm of
    :data:`ARMS` plus settings (e.g. ``dai-sc: {arm: dai, set: {train.denominator: same_class}}``),
    trained and reported as an arm of its own."""
    raw = load_preset(preset) if isinstance(preset, str) else preset
    variants = raw.get("variants") or {}
    where = f"preset '{preset}'" if isinstance(preset, str) else "the preset"
    if not isinstance(variants, dict):
        raise ConfigError(f"'variants' in {where} must map a name to {{arm: ..., set: {{key: value}}}}")
    for name, v in variants.items():
        ok = isinstance(v, dict) and v.get("arm") in ARMS and isinstance(v.get("set", {}), dict)
        if not ok or name in ARMS or not isinstance(name, str) or set(v) - {"arm", "set"}:
            raise ConfigError(
                f"variant '{name}' in {where} must be {{arm: one of {', '.join(ARMS)}, set: {{key: value}}}} "
                "under a name that is not an arm's"
            )
    return variants


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
    """Defaults ← preset ← YAML files ← arm ← the preset's variant settings (``arm`` may name a
    variant of the preset) ← ``key=value`` overrides ← protocol, then :func:`validate`.

    Every error names the key, where it was set (preset, file or ``--set``) and what it takes.
    """
    record: dict[str, str] = {}
    cfg = RunConfig()
    variant: dict[str, Any] = {}
    if preset:
        raw = load_preset(preset)
        variant = preset_variants(raw).get(arm, {})
        cfg = from_dict(run_settings(raw), cfg, record=record)
    for f in files:
        cfg = from_dict(_read_yaml(Path(f)), cfg, record=record)
    if arm:
        base = variant.get("arm", arm)
        cfg = apply_arm(cfg, base)
        record.update({f"train.{k}": f"--arm {base}" for k in ARMS[base]})
    for key, val in variant.get("set", {}).items():  # a variant: its arm plus these settings
        cfg = from_dict(_nested(key, val), cfg, f"variant '{arm}' of preset '{preset}'", record)
    cfg = apply_overrides(cfg, list(overrides), record)
    cfg = resolve_protocol(cfg, record)
    try:
        validate(cfg)
    except _SettingError as e:
        if e.key in record:
            raise ConfigError(f"{e} (set in {record[e.key]})") from None
        raise
    return cfg
