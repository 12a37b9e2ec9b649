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
    "cifar10_synthetic": Source((3, 32, 32), 10, True),
    "blobs": Source(None, None, False),
}


def classes_problem(classes, n_labels: int | None) -> str | None:
    """Why `classes` (data.classes) is no list of labels to train on for a source of `n_labels` labels
    (None: not known yet), or None: it needs two or more distinct integer labels of 0..n_labels-1."""
    labels = f"0..{n_labels - 1}" if n_labels else "the source's labels"
    if (
        isinstance(classes, list | tuple)
        and len(classes) >= 2
        and all(type(c) is int and 0 <= c < (n_labels or float("inf")) for c in classes)
        and len(set(classes)) == len(classes)
    ):
        return None
    return f"is not allowed: use null or a list of two or more distinct labels of {labels}"
