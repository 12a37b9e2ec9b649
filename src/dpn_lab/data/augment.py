"""Training-time augmentation of an image batch on its device (`data.augment`): torchvision's
RandomCrop(size, padding=p) and RandomHorizontalFlip, the CIFAR recipe of He et al. 2016, drawn per image from
a seeded generator (run seed, epoch, batch index, rank, like the noise pairs) rather than torch's global one,
so that a run reproduces and every DDP rank draws its own crops.

    none        the batch as it is (the default of every source but cifar10)
    crop        each image shifted by up to `padding` pixels each way, the uncovered border zero
    crop_flip   crop, then half the images mirrored left-right (cifar10's default; a mirrored digit is
                another symbol, so the digit sets take `crop` at most)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: validation reads AUGMENTS before torch loads
    import torch
    from torch import Tensor

AUGMENTS = ("none", "crop", "crop_flip")


def augment(images: Tensor, kind: str, padding: int, generator: torch.Generator) -> Tensor:
    """images (B x C x H x W) cropped at offsets in [0, 2 * padding] of their zero-padded copy (and, for
    crop_flip, mirrored with probability 1/2); the draws come from `generator` (CPU), the work runs where the
    images are."""
    import torch
    import torch.nn.functional as F

    if kind == "none":
        return images
    B, C, H, W = images.shape
    device = images.device
    offsets = torch.randint(0, 2 * padding + 1, (2, B, 1), generator=generator).to(device)
    rows = (offsets[0] + torch.arange(H, device=device))[:, None, :, None]  # B x 1 x H x 1
    cols = (offsets[1] + torch.arange(W, device=device))[:, None, None, :]  # B x 1 x 1 x W
    batch = torch.arange(B, device=device)[:, None, None, None]
    channels = torch.arange(C, device=device)[None, :, None, None]
    cropped = F.pad(images, (padding,) * 4)[batch, channels, rows, cols]
    if kind == "crop":
        return cropped
    flip = (torch.rand(B, generator=generator) < 0.5).to(device)[:, None, None, None]
    return torch.where(flip, cropped.flip(-1), cropped)
