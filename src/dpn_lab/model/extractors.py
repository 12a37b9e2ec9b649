"""Feature extractors: images or flat vectors -> features x in R^feature_dim."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

from torch import Tensor, nn

from dpn_lab.errors import ConfigError, choice_error
from dpn_lab.model.options import CNN_NORMS, CNN_POOLS


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


class CNNExtractor(nn.Module):
    """Conv blocks (conv-norm-ReLU x2, max-pool 2), then a linear map of the pooled or flattened maps.

    norm: `batch` (BatchNorm; running statistics at test time) or `group` (GroupNorm with 8 groups: the same
        computation for every image, training or test, clean or noisy).
    pool: `avg` (global average pooling: one architecture for any image size, and every feature averages
        over the whole image, background included) or `flatten` (the last maps flattened: features keep
        where a stroke is).
    Measured on MNIST-5k (README, Robustness): BatchNorm + average pooling collapses under faint Gaussian
    noise; GroupNorm + flatten keeps its accuracy, hence the defaults in conf/model/dpn.yaml.
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
        if len(input_shape) != 3:
            raise ConfigError(
                f"CNNExtractor needs (channels, height, width) inputs, got input_shape={input_shape}: "
                "use model.extractor=mlp for flat inputs"
            )
        for name, value, allowed in (("norm", norm, CNN_NORMS), ("pool", pool, CNN_POOLS)):
            if value not in allowed:
                raise choice_error(f"model.extractor_kwargs.{name}", value, allowed)
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


EXTRACTORS: dict[str, type[nn.Module]] = {"mlp": MLPExtractor, "cnn": CNNExtractor}


def extractor_class(name: str) -> type[nn.Module]:
    if name not in EXTRACTORS:
        raise choice_error("model.extractor", name, EXTRACTORS)
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
    """The extractor registered as `name` (`mlp` or `cnn`)."""
    return extractor_class(name)(input_shape, feature_dim, **kwargs)
