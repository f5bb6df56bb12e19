"""One typed configuration for a run: presets (YAML in ``configs/``), files and ``key=value`` overrides.

Every deviation from the paper's defaults is an explicit field, so the resolved ``config.yaml``
of a run says exactly what produced it. :func:`validate` checks everything before any work
starts, and every error says what is wrong, where it was set (a file, a preset or ``--set``)
and how to fix it. :mod:`dainv.config.schema`: the settings, each with its type, choices and
bounds, and their checks; :mod:`dainv.config.load`: strict YAML, presets, overrides, arms, protocol.
"""

from __future__ import annotations

from dainv.config.load import (
    PRESET_DIR,
    ConfigLoader,
    apply_arm,
    apply_overrides,
    list_presets,
    load_config,
    load_preset,
    parse_yaml,
    preset_variants,
    read_run_config,
    resolve_protocol,
    run_settings,
)
from dainv.config.schema import (
    ARMS,
    MAX_SEED,
    NULLABLE,
    PROTOCOLS,
    RESULT_NEUTRAL,
    SPECS,
    AugmentConfig,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    differences,
    dump_yaml,
    flat_items,
    from_dict,
    layer_list,
    model_kwargs,
    to_dict,
    validate,
)

__all__ = [
    "RunConfig", "DataConfig", "ModelConfig", "AugmentConfig", "TrainConfig", "EvalConfig", "MethodConfig",
    "ARMS", "PROTOCOLS", "NULLABLE", "SPECS", "MAX_SEED", "RESULT_NEUTRAL", "PRESET_DIR", "list_presets",
    "load_preset", "run_settings", "preset_variants", "load_config", "read_run_config", "apply_overrides",
    "apply_arm", "resolve_protocol", "validate", "to_dict", "from_dict", "dump_yaml", "flat_items",
    "differences", "layer_list", "model_kwargs", "ConfigLoader", "parse_yaml",
]  # fmt: skip
