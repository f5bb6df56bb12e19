"""Strict YAML for configs: numbers with exponents, no duplicate keys, UTF-8 only.

YAML is read with :class:`ConfigLoader`: PyYAML's safe loader that also reads ``1e-3`` as a
number (YAML 1.1 wants a dot) and refuses a key given twice in one mapping. :func:`_read_yaml`
reads a config file (remembering where it came from, for error messages); :func:`dump_yaml`
writes a run's resolved ``config.yaml``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dainv.config.schema import RunConfig, to_dict
from dainv.errors import ConfigError

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


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
