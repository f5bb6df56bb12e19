"""All-CNN-C (Springenberg et al., 2015) and the ImageNet All-CNN for 64×64 images: two conv tables."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dainv.models.base import TapMixin

__all__ = ["AllCNNC", "AllCNNImageNet", "ConvBNReLU"]


class ConvBNReLU(nn.Sequential):
    """Conv → BatchNorm → ReLU, with Keras' BN epsilon and momentum (docs/method.md)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        # "same" padding: k=3 → 1 on each side. For stride 2 on an even input this yields H/2,
        # as Keras' "same" does (Keras pads 0 before/1 after; the one-pixel shift of the sampling
        # grid is immaterial for training from scratch and is documented in docs/method.md).
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=True),
            # Keras momentum 0.99 == PyTorch momentum 0.01; Keras' default epsilon is 1.001e-5.
            nn.BatchNorm2d(c_out, eps=1.001e-5, momentum=0.01),
            nn.ReLU(inplace=False),
        )


class AllCNNC(TapMixin, nn.Module):
    """All-CNN-C: nine conv-BN-ReLU blocks and global average pooling → logits; ``width`` scales all convs but
    the last (1.37 M parameters at 1). Taps: ``input``, ``conv1``…``conv9``; a subclass may change ``LAYERS``."""

    #: (kernel, stride, out channels) of conv1 … conv9, docs/method.md.
    LAYERS: tuple[tuple[int, int, int], ...] = (
        (3, 1, 96), (3, 1, 96), (3, 2, 96),
        (3, 1, 192), (3, 1, 192), (3, 2, 192),
        (3, 1, 192), (1, 1, 192), (1, 1, 10),
    )  # fmt: skip

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.num_classes, self.width = num_classes, width
        blocks, c_in = [], in_channels
        for i, (k, s, c) in enumerate(self.LAYERS):
            c_out = num_classes if i == len(self.LAYERS) - 1 else max(1, round(c * width))
            blocks.append(ConvBNReLU(c_in, c_out, k, s))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.tap_names: tuple[str, ...] = ("input",) + tuple(f"conv{i + 1}" for i in range(len(blocks)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot/Xavier-uniform conv weights and zero biases (Keras' defaults, docs/method.md)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # running statistics too

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self._forward_taps(x, taps, zip(self.tap_names[1:], self.blocks), lambda x: x.mean(dim=(2, 3)))


class AllCNNImageNet(AllCNNC):
    """Springenberg et al.'s ImageNet All-CNN (Table 6) for 64×64 images: conv1 11×11 stride 2, not 4 (for 224×224),
    keeping its downsampling; BN-ReLU after every conv, no dropout. Taps: ``input``, ``conv1`` … ``conv12``."""

    #: (kernel, stride, out channels) of conv1 … conv12, and the output size for a 64×64 image.
    LAYERS = (
        (11, 2, 96), (1, 1, 96), (3, 2, 96),  # 32×32, 32×32, 16×16
        (5, 1, 256), (1, 1, 256), (3, 2, 256),  # 16×16, 16×16, 8×8
        (3, 1, 384), (1, 1, 384), (3, 2, 384),  # 8×8, 8×8, 4×4
        (3, 1, 1024), (1, 1, 1024), (1, 1, 0),  # 4×4 (conv12: num_classes channels)
    )  # fmt: skip

    def __init__(self, num_classes: int = 200, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__(num_classes, width, in_channels)
