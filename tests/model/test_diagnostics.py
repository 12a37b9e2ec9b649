"""The potential diagnostics against direct computations on constructed cases."""

import math

import numpy as np
import pytest
import torch

from dpn_lab.model.diagnostics import component_label_counts, potential_diagnostics
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


def two_center_potential() -> DenoisingPotential:
    potential = DenoisingPotential(PotentialConfig(2, 2, n_steps=1, covariance="spherical")).double()
    with torch.no_grad():
        potential.mu.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    return potential


def test_spread_responsibilities_and_used_components_by_hand():
    potential = two_center_potential()
    x0 = torch.tensor([[-4.0, 0.0], [-2.0, 0.0], [2.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    classifier = torch.nn.Linear(2, 2).double()
    with torch.no_grad():  # class 1 iff the first coordinate is positive
        classifier.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        classifier.bias.zero_()
    found = potential_diagnostics(potential, classifier, [x0, x0 * 0.5], labels, torch.tensor([0, 1]))
    # centers at +-1: rms distance to their mean 1; features +-2, +-4: rms sqrt((16+4+4+16)/4) = sqrt(10)
    assert found["center_spread_ratio"] == pytest.approx(1 / math.sqrt(10))
    # r_i = softmax(-|x - mu_i|^2 / 2): for x = -2 the logits are -1/2 and -9/2
    r_far, r_near = 1 / (1 + math.exp(-8)), 1 / (1 + math.exp(-4))
    entropy = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in (r_far, r_near)]
    assert found["resp_max"] == pytest.approx((r_far + r_near) / 2)
    assert found["resp_entropy"] == pytest.approx(sum(entropy) / 2)
    assert found["components_used"] == 2
    # x_T = x_0 / 2: |x_T - x_0| = |x_0| / 2 = 2, 1, 1, 2, mean 1.5, over rms sqrt(10)
    assert found["displacement"] == pytest.approx(1.5 / math.sqrt(10))
    assert found["affine_r2"] == pytest.approx(1.0)  # a linear map
    assert found["acc_step_0"] == found["acc_step_1"] == found["acc_responsibility"] == 1.0


def test_affine_r2_falls_for_a_nonlinear_map_and_matches_numpy():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(200, 3, generator=generator, dtype=torch.float64)
    xT = torch.tanh(3 * x0)
    potential = DenoisingPotential(PotentialConfig(3, 2, covariance="diag")).double()
    found = potential_diagnostics(
        potential, torch.nn.Linear(3, 2).double(), [x0, xT], torch.zeros(200, dtype=torch.long)
    )
    design = np.hstack([x0.numpy(), np.ones((200, 1))])
    fitted = design @ np.linalg.lstsq(design, xT.numpy(), rcond=None)[0]
    expected = 1 - ((xT.numpy() - fitted) ** 2).sum() / ((xT.numpy() - xT.numpy().mean(0)) ** 2).sum()
    assert found["affine_r2"] == pytest.approx(expected) and found["affine_r2"] < 0.95
    assert "acc_responsibility" not in found  # no component labels given


def test_components_used_counts_components_claiming_one_percent():
    potential = two_center_potential()
    x0 = torch.cat([torch.full((199, 2), -1.0), torch.tensor([[1.0, 0.0]])]).double()  # 0.5% near center 1
    found = potential_diagnostics(
        potential, torch.nn.Linear(2, 2).double(), [x0], torch.zeros(200, dtype=torch.long)
    )
    assert found["components_used"] == 1


def test_component_label_counts_tally_the_most_responsible_component():
    potential = two_center_potential()
    refined = torch.tensor([[-1.0, 0.0], [-0.9, 0.0], [1.0, 0.0]], dtype=torch.float64)
    counts = component_label_counts(potential, refined, torch.tensor([2, 0, 2]), n_classes=3)
    assert counts.tolist() == [[1, 0, 1], [0, 0, 1]]
