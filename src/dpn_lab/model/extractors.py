"""Feature extractors: images or flat vectors -> features x in R^feature_dim."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLPExtractor(nn.Module):
    """Flattens the input and applies Linear-ReLU blocks, ending in a linear map to feature_dim."""

    def __init__(
        self, input_shape: Sequence[int], feature_dim: int, hidden: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], feature_dim))
        self.net = nn.Sequential(*layers)
        self.input_shape, self.feature_dim = tuple(input_shape), feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class CNNExtractor(nn.Module):
    """Two conv blocks (conv-BN-ReLU x2, max-pool 2) and global average pooling.

    Pooling to 1x1 at the end lets one architecture serve 1x8x8 digits, 1x28x28 MNIST and 3x32x32 CIFAR.
    """

    def __init__(
        self, input_shape: Sequence[int], feature_dim: int, channels: Sequence[int] = (32, 64)
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"CNNExtractor needs (channels, height, width) inputs, got input_shape={input_shape}: "
                "use model.extractor=mlp for flat inputs"
            )
        blocks: list[nn.Module] = []
        c_in = input_shape[0]
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
        self.net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, feature_dim))
        self.input_shape, self.feature_dim = tuple(input_shape), feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.view(-1, *self.input_shape))


EXTRACTORS: dict[str, type[nn.Module]] = {"mlp": MLPExtractor, "cnn": CNNExtractor}


def build_extractor(name: str, input_shape: Sequence[int], feature_dim: int, **kwargs) -> nn.Module:
    """The extractor registered as `name` (`mlp` or `cnn`)."""
    if name not in EXTRACTORS:
        raise ValueError(f"extractor={name!r} is not allowed; choose one of: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[name](input_shape, feature_dim, **kwargs)
