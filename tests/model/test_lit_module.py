"""DPNLitModule: the loss terms against their definition."""

from functools import partial

import pytest
import pytorch_lightning as L
import torch
import torch.nn.functional as F

from dpn_lab.data.blobs import BlobsDataModule
from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.model.lit_module import DPNLitModule, consistency


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
            [1, 8, 8], 10, extractor="mlp", n_steps=3, covariance="lowrank", compile=compiled
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


def _fit(model: DPNLitModule, tmp_path, **trainer_args) -> L.Trainer:
    trainer = L.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        **trainer_args,
    )
    trainer.fit(model, datamodule=BlobsDataModule(n_samples=400, batch_size=32))  # 9 training batches
    return trainer


@pytest.mark.slow  # trains for a second
def test_ema_centers_move_once_per_optimizer_step_on_every_micro_batch(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = DPNLitModule(
        [16], 4, extractor="mlp", n_steps=2, center_update="ema", optimizer=partial(torch.optim.SGD, lr=0.01)
    )
    model.net.potential.active = True
    seen: list[int] = []
    monkeypatch.setattr(DPNLitModule, "_track_centers", lambda self, features: seen.append(len(features)))
    _fit(model, tmp_path, max_epochs=1, accumulate_grad_batches=2)
    # steps after batches 2, 4, 6, 8 and the epoch's last one; each on the clean features of its micro-batches
    assert seen == [64, 64, 64, 64, 32]


@pytest.mark.slow  # trains for a second
def test_the_divergence_message_names_the_learning_rate_in_force(tmp_path):
    torch.manual_seed(0)
    model = DPNLitModule(
        [16],
        4,
        extractor="mlp",
        n_steps=0,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        scheduler=partial(torch.optim.lr_scheduler.ExponentialLR, gamma=0.5),
    )
    _fit(model, tmp_path, max_epochs=2)
    message = str(model._diverged("the loss is nan"))
    assert "the learning rate (now 0.025; model.optimizer.lr sets it)" in message  # 0.1 * 0.5^2


@pytest.mark.parametrize("refinement", ["potential", "residual_mlp"])
def test_refinement_weight_decay_spares_only_the_refinements_parameters(refinement):
    torch.manual_seed(0)
    sgd = partial(torch.optim.SGD, lr=0.1, weight_decay=0.5)
    module = DPNLitModule(
        [1, 8, 8],
        10,
        extractor="mlp",
        n_steps=3,
        refinement=refinement,
        refinement_weight_decay=0.0,
        optimizer=sgd,
    )
    optimizer = module.configure_optimizers()["optimizer"]
    refiner = module.net.residual if refinement == "residual_mlp" else module.net.potential
    own = {id(p) for p in refiner.parameters()}
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert own and own <= {id(p) for p in trainable}
    # one step with zero gradients moves only by weight decay: p <- p - lr * wd * p elsewhere, nothing here
    before = {id(p): p.detach().clone() for p in trainable}
    for p in trainable:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p in trainable:
        expected = before[id(p)] if id(p) in own else before[id(p)] * (1 - 0.1 * 0.5)
        torch.testing.assert_close(p.detach(), expected)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


def test_without_refinement_weight_decay_every_parameter_takes_the_optimizers():
    sgd = partial(torch.optim.SGD, lr=0.1, weight_decay=0.5)
    module = DPNLitModule([1, 8, 8], 10, extractor="mlp", n_steps=3, optimizer=sgd)
    (group,) = module.configure_optimizers()["optimizer"].param_groups
    assert group["weight_decay"] == 0.5
    assert {id(p) for p in group["params"]} == {id(p) for p in module.parameters() if p.requires_grad}


def test_a_frozen_extractor_keeps_its_weights_and_batchnorm_statistics_through_training(tmp_path):
    model = DPNLitModule(
        [1, 8, 8],
        10,
        extractor_kwargs={"norm": "batch"},
        n_steps=1,
        covariance="full",
        init_from="stage_one.ckpt",
        freeze_extractor=True,
        potential_objective="denoise",
        consistency_weight=1.0,
        noise_pairs={"kind": "gaussian", "severity": 0.3},
        optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    model.train()
    assert not model.net.extractor.training and model.net.classifier.training
    assert not any(p.requires_grad for p in model.net.extractor.parameters())
    before = {k: v.clone() for k, v in model.net.extractor.state_dict().items()}
    images, labels = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    loss, _, _ = model._loss_and_logits(images, labels)
    loss.backward()
    # the classifier's loss reaches the classifier only: the potential answers to the consistency term
    assert model.net.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.net.potential.parameters())
    model(images)
    assert all(torch.equal(v, before[k]) for k, v in model.net.extractor.state_dict().items())


@pytest.mark.parametrize("objective", ["density", "tweedie"])
def test_a_fitted_potential_is_left_fixed(objective):
    model = DPNLitModule(
        [1, 8, 8],
        10,
        n_steps=1,
        covariance="full",
        step="noise_model" if objective == "tweedie" else "scalar",
        init_from="stage_one.ckpt",
        freeze_extractor=True,
        potential_objective=objective,
        noise_pairs={"kind": "gaussian", "severity": 0.3},
    )
    assert not any(p.requires_grad for p in model.net.potential.parameters())
    assert all(p.requires_grad for p in model.net.classifier.parameters())
