"""DPNLitModule: the loss terms against their definition."""

import torch
import torch.nn.functional as F

from dpn_lab.model.lit_module import DPNLitModule


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
