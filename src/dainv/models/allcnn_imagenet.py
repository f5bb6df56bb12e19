"""All-CNN, ImageNet variant (Springenberg et al., 2015, Table 6) adapted to 64×64 inputs."""

from __future__ import annotations

from dainv.models.allcnnc import AllCNNC

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


class AllCNNImageNet(AllCNNC):
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

    LAYERS = _LAYERS

    def __init__(self, num_classes: int = 200, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__(num_classes, width, in_channels)
