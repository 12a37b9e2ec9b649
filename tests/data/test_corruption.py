"""Corruptions against independent computations, and their registry."""

import math

import numpy as np
import pytest
import torch

from dpn_lab.data.corruption import CORRUPTIONS, corrupt
from dpn_lab.robustness.evaluate import corrupted

IMAGES = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_severity_zero_is_the_identity(kind):
    assert torch.equal(corrupt(IMAGES, kind, 0), IMAGES)


@pytest.mark.parametrize(
    "kind, severity", [("gaussian", 0.2), ("salt_pepper", 0.1), ("occlusion", 5), ("blur", 1.0)]
)
def test_corruptions_are_deterministic_given_a_seed_and_stay_in_range(kind, severity):
    a, b = corrupted(IMAGES, kind, severity, seed=3), corrupted(IMAGES, kind, severity, seed=3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, IMAGES)
    if kind != "blur":  # blur has no randomness
        assert not torch.equal(a, corrupted(IMAGES, kind, severity, seed=4))


def test_occlusion_blacks_out_one_square_of_the_given_side():
    images = torch.full((50, 1, 12, 12), 0.5)
    for side in (1, 4, 7):
        out = corrupt(images, "occlusion", side, torch.Generator().manual_seed(side))
        zeros = out == 0
        assert torch.equal(zeros.sum((1, 2, 3)), torch.full((50,), side * side))
        for mask in zeros[:, 0]:  # one contiguous square: its bounding box has exactly side x side pixels
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    with pytest.raises(ValueError, match="occlusion side 13 exceeds the 12x12 image"):
        corrupt(images, "occlusion", 13)


def test_blur_shrinks_white_noise_variance_by_the_kernel_energy():
    noise = torch.rand(20, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    sigma = 1.5
    radius = math.ceil(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    expected_ratio = (k**2).sum() ** 2  # separable 2-D kernel: variance factor (sum k^2)^2
    blurred = corrupt(noise, "blur", sigma)
    inner = (slice(None), slice(None), slice(radius, -radius), slice(radius, -radius))  # away from the edges
    ratio = blurred[inner].var() / noise[inner].var()
    assert ratio.item() == pytest.approx(expected_ratio, rel=0.05)
    assert blurred.mean().item() == pytest.approx(noise.mean().item(), abs=1e-3)


def test_corruptions_change_the_expected_amount():
    images = torch.full((200, 1, 28, 28), 0.5)
    generator = torch.Generator().manual_seed(0)
    noisy = corrupt(images, "gaussian", 0.1, generator)
    assert abs((noisy - images).std().item() - 0.1) < 0.005
    flipped = corrupt(images, "salt_pepper", 0.2, generator)
    changed = flipped != images
    assert abs(changed.float().mean().item() - 0.2) < 0.01
    assert set(flipped[changed].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(corrupt(images, "gaussian", 0.0), images)


def test_seeded_generators_repeat_for_the_same_keys_and_differ_otherwise():
    from dpn_lab.data.corruption import seeded_generator

    def draw(*keys):
        return torch.randn(5, generator=seeded_generator(*keys))

    assert torch.equal(draw(0, 3, 7, 0), draw(0, 3, 7, 0))  # a deterministic run reproduces
    for other in [(0, 3, 7, 1), (0, 3, 8, 0), (0, 4, 7, 0), (1, 3, 7, 0)]:  # rank, batch, epoch, seed
        assert not torch.equal(draw(0, 3, 7, 0), draw(*other)), other


def test_every_registered_corruption_has_its_unit_limit_and_meaning():
    for kind, spec in CORRUPTIONS.items():
        assert spec.unit and spec.meaning and (spec.max_severity is None or spec.max_severity > 0), kind
