"""Input corruptions for images (N x C x H x W) in their valid pixel range [0, 1].

Each is deterministic given a generator, and severity 0 leaves the images unchanged. What a severity means,
its unit and its largest allowed value are written once, in CORRUPTIONS; validation, plots and the README
table read them from there.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dpn_lab.errors import ConfigError
from dpn_lab.rules import Choice

if TYPE_CHECKING:  # torch is imported where it is used: validation reads CORRUPTIONS before torch loads
    import torch
    from torch import Tensor

    Corruption = Callable[[Tensor, float, torch.Generator | None], Tensor]


def seeded_generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded by a stable hash of `keys`, e.g. (run seed, epoch, batch index, rank): the same
    keys draw the same numbers in every process and every run; different keys draw independently."""
    import torch

    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _draw(draw, images: Tensor, generator: torch.Generator | None) -> Tensor:
    """Random numbers shaped like images, drawn on the generator's device (a CPU generator serves a batch on
    any device)."""
    device = generator.device if generator is not None else images.device
    return draw(images.shape, generator=generator, device=device, dtype=images.dtype).to(images.device)


def gaussian_noise(images: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """images + N(0, sigma^2) per pixel, clipped to [0, 1]."""
    import torch

    return (images + sigma * _draw(torch.randn, images, generator)).clamp_(0.0, 1.0)


def salt_and_pepper(images: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Each pixel independently replaced with probability p, half by 0 (pepper) and half by 1 (salt)."""
    import torch

    u = _draw(torch.rand, images, generator)
    out = images.clone()
    out[u < p / 2] = 0.0
    out[(u >= p / 2) & (u < p)] = 1.0
    return out


def occlusion(images: Tensor, side: float, generator: torch.Generator | None = None) -> Tensor:
    """One side x side square per image, placed uniformly inside the image, set to 0."""
    import torch

    n, _, height, width = images.shape
    side = int(side)
    if side > min(height, width):
        raise ConfigError(f"occlusion side {side} exceeds the {height}x{width} image")
    top = torch.randint(0, height - side + 1, (n,), generator=generator).to(images.device)
    left = torch.randint(0, width - side + 1, (n,), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)  # n x H
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)  # n x W
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :]).unsqueeze(1)  # n x 1 x H x W
    return images.masked_fill(mask, 0.0)


def gaussian_blur(images: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Separable Gaussian blur of every channel (no randomness: the generator is unused)."""
    import torch
    import torch.nn.functional as F

    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    out = F.conv2d(F.conv2d(padded, horizontal, groups=channels), vertical, groups=channels)
    return out.clamp_(0.0, 1.0)


# The shifts of MNIST-C (Mu & Gilmer 2019) that the four above do not cover. Each image draws its own
# direction (sign, axis, angle) from the generator; the severity is the amount, the same for every image, so
# a severity is one point on a shift axis (as Ovadia et al. 2019 rotate by fixed angles).


def _affine(images: Tensor, generator: torch.Generator | None, choices: list[dict]) -> Tensor:
    """Each image transformed by one of `choices` (torchvision affine arguments), drawn uniformly per image;
    bilinear, filled with 0 (the background of digits) outside the source."""
    import torch
    from torchvision.transforms.v2 import functional as F

    pick = torch.randint(0, len(choices), (len(images),), generator=generator).to(images.device)
    out = images.clone()
    for i, choice in enumerate(choices):
        chosen = pick == i
        if chosen.any():
            params = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0], **choice}
            out[chosen] = F.affine(images[chosen], **params, interpolation=F.InterpolationMode.BILINEAR)
    return out.clamp_(0.0, 1.0)


def rotate(images: Tensor, degrees: float, generator: torch.Generator | None = None) -> Tensor:
    """Rotated by `degrees` about the centre, clockwise or anticlockwise per image."""
    return _affine(images, generator, [{"angle": degrees}, {"angle": -degrees}])


def translate(images: Tensor, pixels: float, generator: torch.Generator | None = None) -> Tensor:
    """Shifted by `pixels` left, right, up or down per image."""
    moves = [[pixels, 0.0], [-pixels, 0.0], [0.0, pixels], [0.0, -pixels]]
    return _affine(images, generator, [{"translate": move} for move in moves])


def shear(images: Tensor, factor: float, generator: torch.Generator | None = None) -> Tensor:
    """Horizontal shear x' = x +- factor * y (MNIST-C's affine shear; torchvision takes its angle)."""
    angle = math.degrees(math.atan(factor))
    return _affine(images, generator, [{"shear": [angle, 0.0]}, {"shear": [-angle, 0.0]}])


def scale(images: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """Zoomed in or out about the centre by the factor 1 + amount per image."""
    return _affine(images, generator, [{"scale": 1.0 + amount}, {"scale": 1.0 / (1.0 + amount)}])


def shot_noise(images: Tensor, photon: float, generator: torch.Generator | None = None) -> Tensor:
    """Poisson counts at 1 / photon photons per unit intensity, rescaled: Poisson(x / photon) * photon,
    clipped to [0, 1] (MNIST-C's c is 1 / photon: 3 to 60)."""
    import torch

    rates = (images / photon).to(generator.device if generator is not None else images.device)
    return (torch.poisson(rates, generator=generator).to(images.device) * photon).clamp_(0.0, 1.0)


def brightness(images: Tensor, amount: float, generator: torch.Generator | None = None) -> Tensor:
    """amount added to every pixel, clipped to [0, 1]: MNIST-C's brightness (+c on the HSV value, which
    for grey images is the pixel). Not torchvision's adjust_brightness: its factor multiplies, and a black
    background stays black."""
    return (images + amount).clamp(0.0, 1.0)


def motion_blur(images: Tensor, length: float, generator: torch.Generator | None = None) -> Tensor:
    """Blurred along a line segment `length` pixels long at an angle drawn per image: each image is
    convolved with its own anti-aliased line kernel (weight max(0, 1 - distance to the segment),
    normalised), edges extended."""
    import torch
    import torch.nn.functional as F

    n, channels, height, width = images.shape
    radius = max(1, math.ceil(length / 2))
    theta = math.pi * torch.rand(n, generator=generator).to(images.device)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    points = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), -1)  # k x k x (row, col)
    direction = torch.stack([torch.sin(theta), torch.cos(theta)], -1).to(images.dtype)  # n x 2
    along = (points @ direction.T).permute(2, 0, 1).clamp(-length / 2, length / 2)  # n x k x k
    nearest = along[..., None] * direction[:, None, None, :]  # the closest point of each segment
    kernels = (1 - (points - nearest).norm(dim=-1)).clamp(min=0)
    kernels = kernels / kernels.sum((1, 2), keepdim=True)
    weight = kernels.repeat_interleave(channels, 0).unsqueeze(1)  # (n C) x 1 x k x k
    padded = F.pad(images.reshape(1, n * channels, height, width), (radius,) * 4, mode="replicate")
    out = F.conv2d(padded, weight, groups=n * channels)
    return out.view(n, channels, height, width).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class CorruptionKind:
    """A registered corruption: the function, the unit of its severity, the largest severity allowed
    (None: no limit) and what a severity means, in one line."""

    apply: Corruption
    unit: str
    max_severity: float | None
    meaning: str


CORRUPTIONS: dict[str, CorruptionKind] = {
    "gaussian": CorruptionKind(
        gaussian_noise,
        "noise sigma",
        None,
        "sigma of additive N(0, sigma^2) noise per pixel, clipped to [0, 1]",
    ),
    "salt_pepper": CorruptionKind(
        salt_and_pepper, "fraction of pixels", 1.0, "fraction p of pixels set to 0 or 1 (half each)"
    ),
    "occlusion": CorruptionKind(
        occlusion, "square side (px)", 32, "side of one black square per image, at a random place"
    ),
    "blur": CorruptionKind(
        gaussian_blur,
        "blur sigma (px)",
        10,
        "sigma of a Gaussian blur (kernel radius ceil(3 sigma), edges extended)",
    ),
    "rotate": CorruptionKind(rotate, "degrees", 180, "rotation by this angle, either way per image"),
    "translate": CorruptionKind(
        translate, "shift (px)", 32, "shift by this many pixels, left, right, up or down per image"
    ),
    "shear": CorruptionKind(shear, "shear factor", 2, "horizontal shear x + f y, either sign per image"),
    "scale": CorruptionKind(scale, "zoom factor - 1", 3, "zoom in or out by the factor 1 + s per image"),
    "shot_noise": CorruptionKind(
        shot_noise, "1 / photons", 1, "Poisson noise at 1 / s photons per unit intensity"
    ),
    "brightness": CorruptionKind(brightness, "added intensity", 1, "s added to every pixel, clipped"),
    "motion_blur": CorruptionKind(
        motion_blur, "blur length (px)", 32, "blur along a segment this long, at an angle per image"
    ),
}


def corrupt(images: Tensor, kind: str, severity: float, generator: torch.Generator | None = None) -> Tensor:
    """Apply the corruption registered as `kind` at `severity` (0 leaves the images unchanged)."""
    Choice(tuple(CORRUPTIONS)).require("corruption", kind)
    if severity == 0:
        return images
    return CORRUPTIONS[kind].apply(images, severity, generator)
