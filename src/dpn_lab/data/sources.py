"""What each data source is, without torch: the preflight checks OOD sets and class lists against it before
the data modules (which import torch) load, and each data module takes its shape from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """input_shape (C, H, W) for images, None where the arguments set it (blobs); n_classes likewise;
    pixel_range: inputs are images in [0, 1] (corruptions, attacks and image OOD sets need that)."""

    input_shape: tuple[int, ...] | None
    n_classes: int | None
    pixel_range: bool


SOURCES: dict[str, Source] = {
    "digits": Source((1, 8, 8), 10, True),
    "mnist5k": Source((1, 28, 28), 10, True),
    "mnist": Source((1, 28, 28), 10, True),
    "fashion_mnist": Source((1, 28, 28), 10, True),
    "cifar10": Source((3, 32, 32), 10, True),
    "blobs": Source(None, None, False),
}
