"""Feature extractors: images or flat vectors -> features x in R^feature_dim."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

from torch import Tensor, nn

from dpn_lab.errors import ConfigError
from dpn_lab.model.options import EXTRACTOR_KWARG_RULES, EXTRACTOR_NAMES, MIN_RESNET_SIDE
from dpn_lab.rules import Choice


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


GROUP_NORM_GROUPS = 8


def check_image_input(extractor: str, input_shape: Sequence[int], min_side: int) -> None:
    """ConfigError unless input_shape is (channels, height, width) with both sides >= min_side."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"{extractor} needs (channels, height, width) inputs, got input_shape={tuple(input_shape)}: "
            "use model.extractor=mlp for flat inputs"
        )
    if min(input_shape[1:]) < min_side:
        raise ConfigError(
            f"{extractor} needs images of at least {min_side}x{min_side}, got {input_shape[1]}x{input_shape[2]}"
        )


class CNNExtractor(nn.Module):
    """Conv blocks (conv-norm-ReLU x2, max-pool 2), then a linear map of the pooled or flattened maps.

    norm: `batch` (BatchNorm; running statistics at test time) or `group` (GroupNorm with 8 groups: the same
        computation for every image, training or test, clean or noisy).
    pool: `avg` (global average pooling: one architecture for any image size, and every feature averages
        over the whole image, background included) or `flatten` (the last maps flattened: features keep
        where a stroke is).
    GroupNorm + flatten, the defaults here (`model.extractor_kwargs` is empty in conf/model/dpn.yaml), were
    chosen on validation data on 2026-11-28, when BatchNorm + average pooling (`recipe=classic`) lost its
    accuracy under faint Gaussian noise (CHANGELOG).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        feature_dim: int,
        channels: Sequence[int] = (32, 64),
        norm: str = "group",
        pool: str = "flatten",
    ) -> None:
        super().__init__()
        check_image_input(type(self).__name__, input_shape, 1)
        for name, value in (("norm", norm), ("pool", pool)):
            EXTRACTOR_KWARG_RULES[name].require(f"model.extractor_kwargs.{name}", value)
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"model.extractor_kwargs.channels={list(channels)} must be a non-empty list of integers >= 1"
            )
        if norm == "group" and any(c % GROUP_NORM_GROUPS for c in channels):
            raise ConfigError(
                f"model.extractor_kwargs.channels={list(channels)}: with norm=group every width must be a "
                f"multiple of {GROUP_NORM_GROUPS}"
            )

        def normalise(width: int) -> nn.Module:
            return nn.BatchNorm2d(width) if norm == "batch" else nn.GroupNorm(GROUP_NORM_GROUPS, width)

        blocks: list[nn.Module] = []
        c_in, height, width = input_shape
        for c_out in channels:
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                normalise(c_out),
                nn.ReLU(),
                nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                normalise(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c_in, height, width = c_out, height // 2, width // 2
        if min(height, width) < 1:
            raise ConfigError(
                f"CNNExtractor: {len(channels)} pooling stages shrink a {input_shape[1]}x{input_shape[2]} image "
                "to nothing; use fewer model.extractor_kwargs.channels"
            )
        head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if pool == "avg" else [nn.Flatten()]
        flat = c_in if pool == "avg" else c_in * height * width
        self.net = nn.Sequential(*blocks, *head, nn.Linear(flat, feature_dim))
        self.input_shape, self.feature_dim = tuple(input_shape), feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.view(-1, *self.input_shape))


class ResNet18Extractor(nn.Module):
    """torchvision's ResNet-18 with the CIFAR stem (He et al. 2016, section 4.2; the usual CIFAR ResNet-18):
    a 3x3 stride-1 first convolution and no max-pool, so a 32x32 image keeps 32x32 maps into the first stage
    and 4x4 into the last (ImageNet's 7x7 stride-2 stem and pool would leave 1x1); its final linear layer
    projects the pooled 512 channels to feature_dim.

    norm: `batch` (the standard) or `group` (8 groups: the same computation for clean and corrupted images).
    Three stride-2 stages divide the side by 8, so images need sides of at least 8 (the preflight refuses
    smaller ones). 8x8 digits run, with 1x1 maps in the last stage, where every 3x3 convolution reduces to
    its centre tap: 11M parameters where the CNN's 0.1M do as well (README, Real scale).
    """

    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)

    def __init__(self, input_shape: Sequence[int], feature_dim: int, norm: str = "batch") -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock, ResNet

        check_image_input(type(self).__name__, input_shape, MIN_RESNET_SIDE)
        EXTRACTOR_KWARG_RULES["norm"].require("model.extractor_kwargs.norm", norm)
        layer = nn.BatchNorm2d if norm == "batch" else _group_norm
        self.net = ResNet(BasicBlock, list(self.blocks_per_stage), num_classes=feature_dim, norm_layer=layer)
        self.net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.net.maxpool = nn.Identity()
        self.input_shape, self.feature_dim = tuple(input_shape), feature_dim

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.view(-1, *self.input_shape))


class ResNet34Extractor(ResNet18Extractor):
    """ResNet18Extractor with ResNet-34's stages (3, 4, 6, 3 basic blocks)."""

    blocks_per_stage = (3, 4, 6, 3)


def _group_norm(width: int) -> nn.Module:
    return nn.GroupNorm(GROUP_NORM_GROUPS, width)


EXTRACTORS: dict[str, type[nn.Module]] = {
    "mlp": MLPExtractor,
    "cnn": CNNExtractor,
    "resnet18": ResNet18Extractor,
    "resnet34": ResNet34Extractor,
}


def extractor_class(name: str) -> type[nn.Module]:
    Choice(EXTRACTOR_NAMES).require("model.extractor", name)
    return EXTRACTORS[name]


def extractor_arguments(name: str, given: dict | None = None) -> dict:
    """Every keyword argument of extractor `name`, defaults filled in under `given`: what a checkpoint
    stores, so that changing a default later does not change what an old checkpoint rebuilds."""
    defaults = {
        p.name: list(p.default) if isinstance(p.default, tuple) else p.default
        for p in inspect.signature(extractor_class(name).__init__).parameters.values()
        if p.default is not p.empty
    }
    return {**defaults, **(given or {})}


def build_extractor(name: str, input_shape: Sequence[int], feature_dim: int, **kwargs) -> nn.Module:
    """The extractor registered as `name` (EXTRACTORS)."""
    return extractor_class(name)(input_shape, feature_dim, **kwargs)
