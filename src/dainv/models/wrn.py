"""Wide residual networks (Zagoruyko & Komodakis, 2016), pre-activation, for 32×32 inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dainv.models.base import TapMixin, he_init

__all__ = ["WideResNet"]


class _Block(nn.Module):
    """Pre-activation block with a 1×1-conv shortcut on a shape change (the authors' reference)."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        shape_changes = c_in != c_out or stride != 1
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if shape_changes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(TapMixin, nn.Module):
    """WRN-``depth``-``widen`` (pre-activation, He-normal; docs/method.md): ``depth = 6·n + 4``, a 3×3 conv, three
    groups of ``n`` blocks with 16·k, 32·k, 64·k channels, BN-ReLU, pooling, linear (WRN-28-10: 36,479,194
    parameters). ``dropout``: between a block's convs (thesis: 0). Taps: ``input``, ``block1`` … ``block{3n}``."""

    def __init__(self, num_classes: int = 10, depth: int = 28, widen: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6·n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if widen < 1 or num_classes < 1:
            raise ValueError(f"widen and num_classes must be >= 1, got {widen}, {num_classes}")
        n = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        blocks, c_in = [], 16
        for g, c in enumerate(widths):
            for i in range(n):
                blocks.append(_Block(c_in, c, 2 if (g > 0 and i == 0) else 1, dropout))
                c_in = c
        self.blocks = nn.ModuleList(blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        self.tap_names: tuple[str, ...] = ("input",) + tuple(f"block{i + 1}" for i in range(len(blocks)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        he_init(self, mode="fan_out")

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        stages = [(None, self.conv1), *zip(self.tap_names[1:], self.blocks)]
        return self._forward_taps(x, taps, stages, lambda x: self.fc(F.relu(self.bn(x)).mean(dim=(2, 3))))
