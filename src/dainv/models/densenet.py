"""DenseNet-BC (Huang et al., 2017) for 32×32 inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dainv.models.base import TapMixin, he_init

__all__ = ["DenseNetBC"]


class _Bottleneck(nn.Module):
    """BN-ReLU-conv1×1 (4k)-BN-ReLU-conv3×3 (k), concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        return torch.cat([x, y], 1)


class _Transition(nn.Module):
    """BN-ReLU-conv1×1 (θ·C)-avgpool 2×2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(TapMixin, nn.Module):
    """DenseNet-BC-``depth``, growth k, compression θ (docs/method.md): a 3×3 conv, three dense blocks of
    ``(depth − 4) / 6`` bottlenecks with θ-compressing transitions, BN-ReLU, pooling, linear (DenseNet-BC-100-12:
    769,162 parameters). Taps: ``input``, ``conv1``, ``block1``…``block3`` (before the transitions)."""

    def __init__(self, num_classes: int = 10, depth: int = 100, growth: int = 12, compression: float = 0.5,
                 in_channels: int = 3) -> None:  # fmt: skip
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"DenseNet-BC depth must be 6·n + 4 (40, 100, 190, ...), got {depth}")
        if not 0 < compression <= 1 or growth < 1:
            raise ValueError(f"need 0 < compression <= 1 and growth >= 1, got {compression}, {growth}")
        n = (depth - 4) // 6
        self.num_classes = num_classes
        c = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        blocks, transitions = [], []
        for b in range(3):
            layers = []
            for _ in range(n):
                layers.append(_Bottleneck(c, growth))
                c += growth
            blocks.append(nn.Sequential(*layers))
            if b < 2:
                c_out = int(c * compression)
                transitions.append(_Transition(c, c_out))
                c = c_out
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, num_classes)
        self.tap_names: tuple[str, ...] = ("input", "conv1", "block1", "block2", "block3")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        he_init(self)

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        b, t = self.blocks, self.transitions
        stages = [("conv1", self.conv1), ("block1", b[0]), (None, t[0]), ("block2", b[1]), (None, t[1]), ("block3", b[2])]
        return self._forward_taps(x, taps, stages, lambda x: self.fc(F.relu(self.bn(x)).mean(dim=(2, 3))))
