"""``tapped(module, layers)``: the tap protocol for any ``nn.Module``, through forward hooks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dainv.errors import ConfigError
from dainv.models.base import TapMixin, unknown_names_message

__all__ = ["Tapped", "TapError", "default_layers", "tapped"]

_INNER = "inner."


class TapError(ConfigError, RuntimeError):
    """A tapped submodule that returned a non-tensor, ran twice or did not run: the user's choice
    of layers, so a :class:`~dainv.errors.DainvError` (and a ``RuntimeError``)."""


_FIX = "name other layers (train.layers, or --layers for dainv evaluate)"


def _blocks(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The children holding parameters (a ``ModuleList``/``ModuleDict``, never called: its own)."""
    out = []
    for name, child in module.named_children():
        if next(child.parameters(), None) is None:
            continue
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            out.extend(_blocks(child, f"{prefix}{name}."))
        else:
            out.append((f"{prefix}{name}", child))
    return out


def default_layers(module: nn.Module) -> list[str]:
    """What ``layers="auto"`` taps in a plain module: its top-level children with parameters, in definition order
    (a ``ModuleList``/``ModuleDict``: its elements; a single block is looked into). ``ValueError`` when none."""
    prefix, blocks = "", _blocks(module)
    while len(blocks) == 1 and _blocks(blocks[0][1]):
        prefix = blocks[0][0] + "."
        blocks = _blocks(blocks[0][1], prefix)
    if not blocks:
        raise ValueError(
            f"{type(module).__name__} has no submodule with parameters to tap by default; name "
            "the layers to tap (train.layers, --layers; dotted names as in named_modules())"
        )
    return [name for name, _ in blocks]


class Tapped(TapMixin, nn.Module):
    """A module whose named submodules' outputs are tapped by forward hooks (:func:`tapped`)."""

    def __init__(self, module: nn.Module, layers: Sequence[str] | str = "auto") -> None:
        super().__init__()
        if isinstance(module, Tapped):
            module = module.inner
        if layers is None or layers == "auto":
            layers = default_layers(module)
        layers = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
        if not layers:
            raise ValueError("tapped() needs at least one layer name (a submodule of the module)")
        named = {n: m for n, m in module.named_modules() if n}
        unknown = [n for n in layers if n not in named and n != "input"]
        if unknown:
            raise ValueError(unknown_names_message(unknown, list(named), what="submodule"))
        self.inner = module
        self.tap_names: tuple[str, ...] = ("input",) + tuple(n for n in layers if n != "input")
        self._store: dict[str, torch.Tensor] | None = None
        self._handles = [named[n].register_forward_hook(self._hook(n)) for n in self.tap_names[1:]]
        # state_dict keys are the inner module's own: no "inner." prefix (see tapped()).
        self._register_state_dict_hook(_strip_inner)
        self._register_load_state_dict_pre_hook(_add_inner, with_module=True)

    def _hook(self, name: str):
        def hook(mod: nn.Module, args, output) -> None:
            store = self._store
            if store is None:
                return
            if name in store:
                raise TapError(
                    f"tapped module {name!r} ran more than once in one forward pass, so its "
                    "output is not one activation per image; tap a module that runs once "
                    f"(e.g. its parent block) instead: {_FIX}"
                )
            if not isinstance(output, torch.Tensor):
                raise TapError(
                    f"tapped module {name!r} returned {type(output).__name__}, not a tensor; "
                    f"tap a submodule whose output is a tensor: {_FIX}"
                )
            store[name] = output

        return hook

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``module(x)``, or ``(module(x), {name: output})`` in layer order when ``taps`` is given."""
        if taps is None:
            return self.inner(x)
        names = self.check_taps(taps)
        self._store = {}
        try:
            logits = self.inner(x)
            store = self._store
        finally:
            self._store = None
        missing = [n for n in names if n != "input" and n not in store]
        if missing:
            raise TapError(f"tapped module(s) {missing} did not run in this forward pass; {_FIX}")
        return logits, {n: (x if n == "input" else store[n]) for n in names}


def _strip_inner(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    head = prefix + _INNER
    for key in [k for k in state_dict if k.startswith(head)]:
        state_dict[prefix + key[len(head) :]] = state_dict.pop(key)


def _add_inner(module: nn.Module, state_dict, prefix: str, *args) -> None:
    head = prefix + _INNER
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(head)]:
        state_dict[head + key[len(prefix) :]] = state_dict.pop(key)


def tapped(module: nn.Module, layers: Sequence[str] | str = "auto") -> Tapped:
    """Any ``nn.Module`` in the tap protocol: ``tapped(resnet, ["layer1", "layer4"])(x, taps=[...])
    -> (logits, {name: output})``. ``layers``: dotted submodule names in depth order (the α law
    weighs them in it), each run once per forward; ``"auto"``: :func:`default_layers`. The
    ``state_dict`` keys are the module's own (a plain one loads). Wrap before compile or DDP."""
    return Tapped(module, layers)
