"""The capacity-matched control: x_0 + MLP(x_0), as many parameters as the potential it replaces (within 5%
for the comparison's configurations), the identity at initialisation, trained through the same module."""

import pytest
import torch

from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig
from dpn_lab.model.residual_control import ResidualMLP, matched_width


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical", "lowrank"])
@pytest.mark.parametrize("dim, components", [(32, 16), (64, 32), (16, 8), (32, 4)])
def test_the_control_has_the_potentials_parameter_count_to_half_a_hidden_unit(covariance, dim, components):
    potential = DenoisingPotential(PotentialConfig(dim, components, n_steps=5, covariance=covariance))
    width = matched_width(count(potential), dim)
    control = ResidualMLP(dim, width)
    assert count(control) == width * (2 * dim + 1) + dim  # the docstring's formula
    assert abs(count(control) - count(potential)) <= dim + 0.5
    if count(potential) >= 10 * (2 * dim + 1):  # then within 5%: the comparison's configurations
        assert abs(count(control) - count(potential)) <= 0.05 * count(potential)


def test_the_comparisons_configurations_are_matched_within_5_percent():
    for dim, components in ((32, 16), (64, 32)):  # digits and mnist5k, diag precision
        potential = DenoisingPotential(PotentialConfig(dim, components, n_steps=5, covariance="diag"))
        control = ResidualMLP(dim, matched_width(count(potential), dim))
        assert abs(count(control) - count(potential)) <= 0.05 * count(potential)


def test_the_control_starts_as_the_identity_and_learns():
    control = ResidualMLP(8, 5)
    x = torch.randn(4, 8)
    torch.testing.assert_close(control(x), x)
    (control(x) - 1).pow(2).sum().backward()
    assert control.outer.weight.grad.abs().sum() > 0


def test_a_control_model_refines_by_its_mlp_and_leaves_its_potential_idle():
    torch.manual_seed(0)
    model = DPNLitModule([1, 8, 8], 10, extractor="mlp", n_steps=5, refinement="residual_mlp")
    net = model.net
    assert net.potential.n_steps == 0 and not any(p.requires_grad for p in net.potential.parameters())
    matched = count(
        DenoisingPotential(
            PotentialConfig(
                **{k: model.hparams[k] for k in ("feature_dim", "n_components", "n_steps", "covariance")}
            )
        )
    )
    assert abs(count(net.residual) - matched) <= 0.05 * matched
    images = torch.rand(3, 1, 8, 8)
    states = net.states(images)
    assert len(states) == 2
    torch.testing.assert_close(states[1], net.residual(states[0]))
    torch.testing.assert_close(model(images), net.classifier(net.residual(net.features(images))))
    # a checkpoint's hyperparameters rebuild the same shapes
    rebuilt = DPNLitModule(**model.hparams)
    rebuilt.load_state_dict(model.state_dict())


def test_a_diverging_control_is_described_without_the_potentials_step_sizes():
    model = DPNLitModule([1, 8, 8], 10, extractor="mlp", n_steps=5, refinement="residual_mlp")
    assert "now eta=0)" in str(model._diverged("the loss is nan"))  # its potential has no steps
