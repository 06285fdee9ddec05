"""The CNN6 of R-GAP (Zhu & Blaschko, "R-GAP: Recursive Gradient Attack on Privacy", ICLR 2021, Sec. 5 and their
code): six bias-free convolutions with LeakyReLU(0.2) and one linear layer."""

from __future__ import annotations

import torch
from torch import nn

CNN6_CHANNELS = (12, 36, 36, 36, 64, 128)
"""R-GAP's rank-sufficient CNN6 (kernels 4, 3, 3, 3, 3, 3; strides 2, 2, 1, 1, 2, 1)."""
CNN6D_CHANNELS = (12, 20, 36, 36, 64, 128)
"""R-GAP's CNN6-d, the variant with a narrower second layer that the paper uses as its rank-deficient example."""

_KERNELS = (4, 3, 3, 3, 3, 3)
_STRIDES = (2, 2, 1, 1, 2, 1)
_PADDINGS = (2, 1, 1, 1, 1, 1)


class CNN6(nn.Module):
    """Six convolutions (no bias, LeakyReLU slope 0.2), flatten, one linear classifier.

    R-GAP's code ends in ``Linear(3200, 1)`` without bias for a binary task; for ``num_classes`` outputs we keep the
    architecture and let ``head_bias`` choose whether the classifier has a bias (the multi-class variant breaching uses
    has one). Every activation is invertible, which is what a recursive attack needs.

    Args:
        channels: output channels of the six convolutions (:data:`CNN6_CHANNELS`, or :data:`CNN6D_CHANNELS`).
        bias: biases in the convolutions (R-GAP: none).
        head_bias: a bias in the linear classifier.
        negative_slope: the LeakyReLU slope (R-GAP: 0.2).
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (3, 32, 32),
        channels: tuple[int, ...] = CNN6_CHANNELS,
        bias: bool = False,
        head_bias: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != len(_KERNELS) or min(channels) < 1:
            raise ValueError(f"channels must be {len(_KERNELS)} positive integers, got {channels!r}")
        layers: list[nn.Module] = []
        inputs = image_shape[0]
        for out, kernel, stride, padding in zip(channels, _KERNELS, _STRIDES, _PADDINGS, strict=True):
            layers += [nn.Conv2d(inputs, out, kernel, stride=stride, padding=padding, bias=bias)]
            layers += [nn.LeakyReLU(negative_slope)]
            inputs = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            features = self.body(torch.zeros(1, *image_shape)).shape[1]
        self.fc = nn.Linear(features, num_classes, bias=head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))
