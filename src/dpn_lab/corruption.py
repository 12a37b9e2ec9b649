"""Input corruptions for images in their valid pixel range [0, 1], each deterministic given a generator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Corruption = Callable[[Tensor, float, torch.Generator | None], Tensor]


def gaussian_noise(images: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """images + N(0, sigma^2) per pixel, clipped to [0, 1]."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + sigma * noise).clamp_(0.0, 1.0)


def salt_and_pepper(images: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Each pixel independently replaced with probability p, half by 0 (pepper) and half by 1 (salt)."""
    u = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    out = images.clone()
    out[u < p / 2] = 0.0
    out[(u >= p / 2) & (u < p)] = 1.0
    return out


CORRUPTIONS: dict[str, Corruption] = {"gaussian": gaussian_noise, "salt_pepper": salt_and_pepper}


def corrupt(images: Tensor, kind: str, severity: float, generator: torch.Generator | None = None) -> Tensor:
    """Apply the corruption registered as `kind` at `severity` (0 leaves the images unchanged)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption {kind!r} is not allowed; choose one of: {', '.join(CORRUPTIONS)}")
    if severity == 0:
        return images
    return CORRUPTIONS[kind](images, severity, generator)
