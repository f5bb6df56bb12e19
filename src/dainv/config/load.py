"""Reading configs: strict YAML (:class:`ConfigLoader`), presets (``configs/``), files, arms and
``key=value`` overrides, merged in that order by :func:`load_config`, then the protocol, then
validated."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from dainv.config.schema import ARMS, PROTOCOLS, SPECS, RunConfig, from_dict, validate
from dainv.errors import ConfigError

#: The presets folder: ``src/dainv/presets`` (a link to the repository's ``configs/``).
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"

#: A preset's keys for ``dainv reproduce``, not run settings: the arms it trains, its arm
#: variants and its extra evaluation schemes.
REPRODUCE_KEYS = ("arms", "variants", "eval_schemes")


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping: ``args`` are the key and its two lines."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus ``1e-3`` as a float (YAML 1.1 wants a dot) and a refusal of
    a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(  # 1e-3, 5E4, -1e-3
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str, where: str = "the YAML text", *, else_text: bool = False) -> Any:
    """Parse ``text`` with :class:`ConfigLoader`; ``where`` names it in the error messages.
    ``else_text``: text that is not YAML is returned as it is (a ``--set`` value)."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except _DuplicateKey as e:
        key, first, again = e.args
        lines = f" (lines {first} and {again})" if first != again else ""
        raise ConfigError(
            f"{where}: key {key!r} is given twice{lines}; keep one of them (a later one would silently win)"
        ) from None
    except yaml.YAMLError as e:
        if else_text:
            return text
        raise ConfigError(f"{where} is not valid YAML: {e}") from None


class _Sourced(dict):
    """A mapping read from a file, remembering where from (:func:`from_dict` names it)."""

    source: str | None = None


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
            f"{source} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    data = parse_yaml(text, source)
    if not isinstance(data, (dict, type(None))):
        raise ConfigError(f"{source} must hold a mapping of keys to values, got {type(data).__name__}")
    out = _Sourced(data or {})
    out.source = source
    return out


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
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(list_presets())} (in {PRESET_DIR})")
    return _read_yaml(path, f"preset '{name}'")


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


def _nested(key: str, val: Any) -> dict[str, Any]:
    """``a.b.c``, v → ``{a: {b: {c: v}}}``."""
    for part in reversed(str(key).strip().split(".")):
        val = {part: val}
    return val


def apply_overrides(cfg: RunConfig, overrides: list[str], record: dict[str, str] | None = None) -> RunConfig:
    """Apply ``section.key=value`` strings; values are parsed as YAML (``3``, ``1e-3``, ``[1,2]``,
    ``true``). An empty value (``key=``), ``null`` or ``~`` is null, which only the keys of
    :data:`NULLABLE` take."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            what = "has no key; write" if eq else "must look like"
            raise ConfigError(f"override '{item}' {what} key=value, e.g. train.epochs=10")
        source = f"--set {item}"
        val = parse_yaml(raw, source, else_text=True) if raw.strip() else None
        spec = SPECS.get(key.strip())
        if val is not None and not isinstance(val, str) and spec and spec.kind is str:
            val = raw.strip()  # name=123, data.dataset=npz: (YAML would read a number, a mapping)
        cfg = from_dict(_nested(key, val), cfg, source, record)
    return cfg


def apply_arm(cfg: RunConfig, arm: str, record: dict[str, str] | None = None) -> RunConfig:
    """Set views and α for one of :data:`ARMS`."""
    if arm not in ARMS:
        raise ConfigError(f"unknown arm '{arm}'; choose from {', '.join(ARMS)}")
    return from_dict({"train": ARMS[arm]}, cfg, f"--arm {arm}", record)


def resolve_protocol(cfg: RunConfig, record: dict[str, str] | None = None) -> RunConfig:
    """Apply ``method.protocol``'s settings (:data:`PROTOCOLS`) to the keys not set explicitly
    (``record`` says which were): :func:`validate` refuses an explicit contradiction, naming
    both keys and where each was set."""
    for key, want in PROTOCOLS.get(cfg.method.protocol, {}).items():
        if key not in (record or {}):
            cfg = from_dict(_nested(key, want), cfg)
    return cfg


def load_config(
    preset: str | None = None, files: list[str | Path] = (), overrides: list[str] = (), arm: str | None = None
) -> RunConfig:
    """Defaults ← preset ← YAML files ← arm ← the preset's variant settings (``arm`` may name a
    variant of the preset) ← ``key=value`` overrides ← protocol, then :func:`validate`.

    Every error names the key, where it was set (preset, file or ``--set``) and what it takes.
    """
    record: dict[str, str] = {}
    cfg, variant = RunConfig(), {}
    if preset:
        raw = load_preset(preset)
        variant = preset_variants(raw).get(arm, {})
        cfg = from_dict(run_settings(raw), cfg, record=record)
    for f in files:
        cfg = from_dict(_read_yaml(Path(f)), cfg, record=record)
    if arm:
        cfg = apply_arm(cfg, variant.get("arm", arm), record)
    for key, val in variant.get("set", {}).items():  # a variant: its arm plus these settings
        cfg = from_dict(_nested(key, val), cfg, f"variant '{arm}' of preset '{preset}'", record)
    cfg = resolve_protocol(apply_overrides(cfg, list(overrides), record), record)
    validate(cfg, record)
    return cfg
