"""DPNLitModule: the loss terms against their definition."""

import pytest
import torch
import torch.nn.functional as F

from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.model.lit_module import DPNLitModule, consistency


def test_loss_adds_step_supervision_and_auxiliary_terms():
    torch.manual_seed(0)
    module = DPNLitModule(
        [1, 8, 8], 10, extractor="mlp", n_steps=3, step_supervision=0.5, aux_loss_weight=0.25
    )
    images, labels = torch.rand(6, 1, 8, 8), torch.arange(6)
    loss, logits, states = module._loss_and_logits(images, labels)
    per_step = [F.cross_entropy(module.net.classifier(s), labels) for s in states]  # x_0, x_1, x_2, x_3
    expected = per_step[3] + 0.5 * (per_step[1] + per_step[2]) / 2 + 0.25 * per_step[0]
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, module(images))


class _Trainer:  # what training_step and the center update read from Lightning's trainer
    world_size = 1


def test_noise_pairs_train_on_both_copies_with_the_consistency_term(monkeypatch):
    torch.manual_seed(0)
    pairs = {"kind": "gaussian", "severity": 0.3}
    module = DPNLitModule(
        [1, 8, 8], 10, extractor="mlp", n_steps=2, noise_pairs=pairs, consistency_weight=0.7
    )
    monkeypatch.setattr(DPNLitModule, "current_epoch", 3)
    images, labels = torch.rand(6, 1, 8, 8), torch.arange(6)
    loss = module.training_step((images, labels), batch_idx=5)
    generator = seeded_generator("noise_pairs", torch.initial_seed(), 3, 5, 0)
    noisy = corrupt(images, "gaussian", 0.3, generator)
    clean_states, noisy_states = module.net.states(images), module.net.states(noisy)
    both = torch.cat([images, noisy])
    expected_ce = F.cross_entropy(module.net(both), torch.cat([labels, labels]))
    clean0 = clean_states[0].detach()
    term = (noisy_states[-1] - clean0).pow(2).sum(1).mean() / max(float(clean0.var(0).sum()), 1e-4)
    torch.testing.assert_close(loss, expected_ce + 0.7 * term)


def test_the_ablation_of_noise_pairs_compares_unrefined_features():
    torch.manual_seed(0)
    clean, noisy = torch.randn(5, 4), torch.randn(5, 4)
    expected = ((noisy - clean) ** 2).sum(1).mean() / clean.var(0).sum().clamp_min(1e-4)
    torch.testing.assert_close(consistency(noisy, clean), expected)
    tiny = 1e-3 * clean  # collapsed features: the floor only guards the division
    assert float(tiny.var(0).sum()) < 1e-4
    torch.testing.assert_close(consistency(tiny + 1e-3, tiny), torch.tensor(4e-6 / 1e-4))


def test_center_tracking_moves_centers_toward_responsibility_weighted_means(monkeypatch):
    torch.manual_seed(0)
    module = DPNLitModule(
        [1, 8, 8],
        10,
        extractor="mlp",
        feature_dim=2,
        n_components=2,
        center_update="ema",
        center_momentum=0.75,
    )
    monkeypatch.setattr(DPNLitModule, "trainer", _Trainer())
    with torch.no_grad():
        module.net.potential.mu.copy_(torch.tensor([[-5.0, 0.0], [5.0, 0.0]]))
    features = torch.tensor([[-4.0, 1.0], [-6.0, 3.0], [6.0, -2.0]])
    r = module.net.potential.responsibilities(features)
    target = (r.T @ features) / r.sum(0)[:, None]
    before = module.net.potential.mu.detach().clone()
    module._track_centers(features)
    torch.testing.assert_close(module.net.potential.mu.detach(), 0.75 * before + 0.25 * target)


@pytest.mark.slow  # compiling takes seconds
def test_a_compiled_refinement_gives_the_same_loss_and_gradients_and_checkpoint_keys():
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        module = DPNLitModule(
            [1, 8, 8], 10, extractor="mlp", n_steps=3, precision="lowrank", compile=compiled
        )
        images, labels = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
        loss, _, _ = module._loss_and_logits(images, labels)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in module.parameters()], list(module.state_dict())))
    (loss, grads, keys), (loss_c, grads_c, keys_c) = results
    torch.testing.assert_close(loss_c, loss)
    for grad, grad_c in zip(grads, grads_c, strict=True):
        torch.testing.assert_close(grad_c, grad, rtol=1e-4, atol=1e-6)
    assert keys_c == keys  # a compiled run's checkpoints load into an uncompiled model
