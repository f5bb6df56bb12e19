"""One typed configuration for a run: presets (YAML in ``configs/``), files and ``key=value`` overrides.

Defaults are the paper's: a bare :class:`RunConfig` is the paper's DAI arm (docs/method.md §5).
Every deviation is an explicit field, so the resolved ``config.yaml`` of a run says exactly
what produced it. :func:`validate` checks everything before any work starts, and every error
says what is wrong, where it was set (a file, a preset or ``--set``) and how to fix it.

YAML is read with :class:`ConfigLoader`: PyYAML's safe loader that also reads ``1e-3`` as a
number (YAML 1.1 wants a dot) and refuses a key given twice in one mapping.

The package's modules:

- :mod:`dainv.config.schema`: the dataclasses, :data:`ARMS`, :data:`PROTOCOLS`, :data:`NULLABLE`,
  :func:`to_dict`, :func:`from_dict` (merge and type coercion), :func:`model_kwargs`,
  :func:`layer_list` (the one syntax of layer names);
- :mod:`dainv.config.yamlio`: the strict YAML loader, :func:`parse_yaml`, ``_read_yaml``,
  :func:`dump_yaml`;
- :mod:`dainv.config.validation`: :func:`validate` and its bounds, :func:`resolve_protocol`;
- :mod:`dainv.config.load`: :data:`PRESET_DIR`, presets, overrides, arms and :func:`load_config`.
"""

from __future__ import annotations

from dainv.config.load import (
    PRESET_DIR,
    apply_arm,
    apply_overrides,
    list_presets,
    load_config,
    load_preset,
    preset_variants,
    read_run_config,
    run_settings,
)
from dainv.config.schema import (
    ARMS,
    NULLABLE,
    PROTOCOLS,
    RESULT_NEUTRAL,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    differences,
    flat_items,
    from_dict,
    layer_list,
    model_kwargs,
    to_dict,
)
from dainv.config.validation import MAX_SEED, resolve_protocol, validate
from dainv.config.yamlio import ConfigLoader, dump_yaml, parse_yaml

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
    "run_settings",
    "preset_variants",
    "load_config",
    "read_run_config",
    "apply_overrides",
    "apply_arm",
    "validate",
    "to_dict",
    "from_dict",
    "dump_yaml",
    "flat_items",
    "differences",
    "RESULT_NEUTRAL",
    "layer_list",
    "model_kwargs",
    "PROTOCOLS",
    "NULLABLE",
    "MAX_SEED",
    "ConfigLoader",
    "parse_yaml",
    "resolve_protocol",
]
