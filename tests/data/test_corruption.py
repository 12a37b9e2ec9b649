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
    "kind, severity",
    [
        ("gaussian", 0.2),
        ("salt_pepper", 0.1),
        ("occlusion", 5),
        ("blur", 1.0),
        ("rotate", 30),
        ("translate", 2),
        ("shear", 0.4),
        ("scale", 0.4),
        ("shot_noise", 0.1),
        ("brightness", 0.3),
        ("motion_blur", 3),
    ],
)
def test_corruptions_are_deterministic_given_a_seed_and_stay_in_range(kind, severity):
    a, b = corrupted(IMAGES, kind, severity, seed=3), corrupted(IMAGES, kind, severity, seed=3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, IMAGES)
    if kind not in ("blur", "brightness"):  # no randomness
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


# the shifts of MNIST-C, each against what the shift does to an image whose answer is known by hand
def _dot(size: int, row: int, col: int, n: int = 32) -> torch.Tensor:
    images = torch.zeros(n, 1, size, size)
    images[:, :, row, col] = 1.0
    return images


def test_rotate_by_90_degrees_turns_the_grid_one_way_or_the_other():
    images = IMAGES[:32]
    out = corrupted(images, "rotate", 90, seed=0)
    left, right = torch.rot90(images, 1, (2, 3)), torch.rot90(images, -1, (2, 3))
    turned_left = [bool((o - a).abs().max() < 1e-5) for o, a in zip(out, left, strict=True)]
    turned_right = [bool((o - a).abs().max() < 1e-5) for o, a in zip(out, right, strict=True)]
    assert all(a or b for a, b in zip(turned_left, turned_right, strict=True))
    assert 0 < sum(turned_left) < len(out)  # the direction is drawn per image


def test_translate_moves_a_dot_by_the_given_pixels_in_one_of_four_directions():
    out = corrupted(_dot(9, 4, 4), "translate", 2, seed=0)
    places = {tuple((o[0] == 1).nonzero()[0].tolist()) for o in out}
    assert places == {(4, 6), (4, 2), (6, 4), (2, 4)} and torch.equal(out.sum((1, 2, 3)), torch.ones(32))


def test_shear_moves_a_dot_sideways_by_the_factor_times_its_height():
    out = corrupted(_dot(9, 6, 4), "shear", 1.0, seed=0)  # 2 rows below the centre: 2 columns sideways
    places = {tuple((o[0] > 0.99).nonzero()[0].tolist()) for o in out}
    assert places == {(6, 2), (6, 6)}


def test_scale_multiplies_a_blob_area_by_the_zoom_squared():
    rows = torch.arange(33.0) - 16
    blob = torch.exp(-(rows[:, None] ** 2 + rows[None, :] ** 2) / (2 * 2.0**2)).expand(32, 1, 33, 33)
    mass = corrupted(blob, "scale", 0.5, seed=0).sum((1, 2, 3)) / blob[0].sum()
    zoomed_in = mass > 1
    assert 0 < zoomed_in.sum() < 32
    torch.testing.assert_close(
        mass[zoomed_in], torch.full((int(zoomed_in.sum()),), 1.5**2), rtol=0.03, atol=0
    )
    torch.testing.assert_close(
        mass[~zoomed_in], torch.full((int((~zoomed_in).sum()),), 1.5**-2), rtol=0.03, atol=0
    )


def test_shot_noise_keeps_the_mean_with_the_poisson_variance():
    grey = torch.full((64, 1, 32, 32), 0.4)
    out = corrupted(grey, "shot_noise", 0.01, seed=0)
    # Poisson(0.4 / 0.01) * 0.01: mean 0.4, variance 0.4 * 0.01; counts are whole numbers of 0.01
    assert out.mean().item() == pytest.approx(0.4, abs=0.002)
    assert out.var().item() == pytest.approx(0.004, rel=0.05)
    assert torch.allclose(out * 100, (out * 100).round(), atol=1e-4)


def test_brightness_adds_and_clips():
    torch.testing.assert_close(corrupted(IMAGES, "brightness", 0.3, seed=0), (IMAGES + 0.3).clamp(max=1.0))


def test_motion_blur_spreads_a_dot_along_a_segment_of_the_given_length():
    out = corrupted(_dot(21, 10, 10, n=8), "motion_blur", 8, seed=0)
    torch.testing.assert_close(out.sum((1, 2, 3)), torch.ones(8))
    grid = torch.stack(torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij"), -1) - 10
    angles = set()
    for o in out[:, 0]:
        second = torch.einsum("ij,ija,ijb->ab", o, grid, grid)  # the spread's second moments
        small, large = torch.linalg.eigvalsh(second)
        # a segment of length 8 covers the 9 pixels -4..4 along it: variance ((L + 1)^2 - 1) / 12 = 6.67
        # (the anti-aliased ends move it a little with the angle), well under 1 across it
        assert 6.0 < large < 7.3 and small < 0.5
        angles.add(round(float(torch.linalg.eigh(second).eigenvectors[:, 1].abs()[0]), 2))
    assert len(angles) > 1  # each image draws its own angle
