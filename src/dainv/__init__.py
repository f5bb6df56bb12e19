"""dainv — data augmentation invariance (Hernández-García, König & Kietzmann, 2019) in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"

#: The public modules, importable as attributes after ``import dainv`` (``dainv.models.
#: register_model``, ``dainv.checkpoint.save_checkpoint`` …); loaded on first use, so that
#: ``import dainv`` (and the CLI's start-up) does not import torch before it is needed.
_SUBMODULES = frozenset({
    "augment", "checkpoint", "config", "data", "errors", "evaluate", "invariance", "measure",
    "models", "report", "reproduce", "runtime", "train",
})


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"dainv.{name}")
    raise AttributeError(f"module 'dainv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
