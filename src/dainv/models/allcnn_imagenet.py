"""All-CNN, ImageNet variant (Springenberg et al., 2015, Table 6) adapted to 64×64 inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dainv.models.allcnnc import ConvBNReLU
from dainv.models.base import TapMixin

__all__ = ["AllCNNImageNet"]

# (kernel, stride, out channels) of conv1 … conv12; the last one has num_classes channels.
_LAYERS: tuple[tuple[int, int, int], ...] = (
    (11, 2, 96),
    (1, 1, 96),
    (3, 2, 96),
    (5, 1, 256),
    (1, 1, 256),
    (3, 2, 256),
    (3, 1, 384),
    (1, 1, 384),
    (3, 2, 384),
    (3, 1, 1024),
    (1, 1, 1024),
    (1, 1, 0),
)


class AllCNNImageNet(TapMixin, nn.Module):
    """Springenberg et al.'s ImageNet All-CNN for 64×64 images (Tiny ImageNet; docs/method.md).

    The ImageNet network with its first conv changed from 11×11 stride 4 (224×224 inputs) to
    11×11 stride 2, so that a 64×64 image keeps the same downsampling pattern. Every conv is
    followed by BatchNorm and ReLU (the last too), as in this project's All-CNN-C; no dropout;
    Glorot-uniform weights, zero biases. Padding is ``kernel // 2`` ("same").

    | layer  | kernel | stride | out ch      | output (64×64 in) |
    |--------|--------|--------|-------------|-------------------|
    | conv1  | 11     | 2      | 96          | 32×32             |
    | conv2  | 1      | 1      | 96          | 32×32             |
    | conv3  | 3      | 2      | 96          | 16×16             |
    | conv4  | 5      | 1      | 256         | 16×16             |
    | conv5  | 1      | 1      | 256         | 16×16             |
    | conv6  | 3      | 2      | 256         | 8×8               |
    | conv7  | 3      | 1      | 384         | 8×8               |
    | conv8  | 1      | 1      | 384         | 8×8               |
    | conv9  | 3      | 2      | 384         | 4×4               |
    | conv10 | 3      | 1      | 1024        | 4×4               |
    | conv11 | 1      | 1      | 1024        | 4×4               |
    | conv12 | 1      | 1      | num_classes | 4×4               |

    then global average pooling to the logits. Taps: ``input``, ``conv1`` … ``conv12`` (post-ReLU).

    Args:
        num_classes: number of logits (200 for Tiny ImageNet).
        width: scales the channels of conv1–conv11.
        in_channels: channels of the input images.
    """

    def __init__(self, num_classes: int = 200, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or width <= 0:
            raise ValueError(f"need num_classes >= 1 and width > 0, got {num_classes}, {width}")
        self.num_classes = num_classes
        self.width = width
        blocks = []
        c_in = in_channels
        for i, (k, s, c) in enumerate(_LAYERS):
            c_out = num_classes if i == len(_LAYERS) - 1 else max(1, round(c * width))
            blocks.append(ConvBNReLU(c_in, c_out, k, s))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.tap_names: tuple[str, ...] = ("input",) + tuple(f"conv{i + 1}" for i in range(len(blocks)))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        wanted = set(self.check_taps(taps)) if taps is not None else ()
        out: dict[str, torch.Tensor] = {}
        if "input" in wanted:
            out["input"] = x
        for name, block in zip(self.tap_names[1:], self.blocks):
            x = block(x)
            if name in wanted:
                out[name] = x
        logits = x.mean(dim=(2, 3))
        return logits if taps is None else (logits, out)
