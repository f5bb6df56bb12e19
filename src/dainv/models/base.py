"""The tap protocol every dainv model speaks, and the helpers that implement it."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["TappedModel", "TapMixin", "he_init", "unknown_names_message"]


@runtime_checkable
class TappedModel(Protocol):
    """What the DAI loss and the invariance score need: ``tap_names`` in depth order (perhaps ``"input"`` first);
    ``forward(x, taps=[names])`` → ``(logits, {name: activation})``; ``check_taps(names)`` → names in layer order."""

    tap_names: tuple[str, ...]

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def check_taps(self, taps: Sequence[str]) -> tuple[str, ...]: ...


def unknown_names_message(unknown: Sequence[str], known: Sequence[str], what: str = "layer") -> str:
    """``unknown layer name(s) [...]`` with close matches (difflib) and the known names."""
    known = list(known)
    hints = [
        f"{name!r}: did you mean {' or '.join(repr(c) for c in close)}?"
        for name in unknown
        if (close := difflib.get_close_matches(name, known, n=3, cutoff=0.5))
    ]
    shown = known if len(known) <= 40 else known[:40] + [f"... ({len(known) - 40} more)"]
    return "; ".join([f"unknown {what} name(s) {list(unknown)}", *hints, f"this model's {what}s are {shown}"])


def he_init(model: nn.Module, mode: str = "fan_in") -> None:
    """The thesis's WRN/DenseNet init: He-normal convs over ``mode``, BN reset, zero linear bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


class TapMixin:
    """``check_taps`` for a model with a ``tap_names`` tuple."""

    tap_names: tuple[str, ...]

    def check_taps(self, taps: Sequence[str]) -> tuple[str, ...]:
        """The names in layer order, deduplicated; ``ValueError`` (close matches) for unknown ones."""
        if isinstance(taps, str):
            taps = [taps]
        unknown = [t for t in taps if t not in self.tap_names]
        if unknown:
            raise ValueError(unknown_names_message(unknown, self.tap_names))
        wanted = set(taps)
        return tuple(t for t in self.tap_names if t in wanted)

    def _forward_taps(self, x: torch.Tensor, taps: Sequence[str] | None, stages: Iterable[tuple[str | None, nn.Module]],
                      head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        """``forward``: ``stages`` ((tap name or None, module), in order), then ``head`` → logits (and the taps)."""
        wanted = set(self.check_taps(taps)) if taps is not None else ()
        out: dict[str, torch.Tensor] = {"input": x} if "input" in wanted else {}
        for name, stage in stages:
            x = stage(x)
            if name in wanted:
                out[name] = x
        logits = head(x)
        return logits if taps is None else (logits, out)
