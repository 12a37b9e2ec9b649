"""The paper's FullArchitecture: feature extractor -> DenoisingPotential -> linear classifier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dpn_lab.model.potential import DenoisingPotential


class FullArchitecture(nn.Module):
    """Classifies images by the linear read-out of their refined features.

    With n_steps = 0 the potential never touches the output, so its parameters are frozen: an optimizer
    or DDP would otherwise track parameters that can never receive a gradient.
    """

    def __init__(self, extractor: nn.Module, potential: DenoisingPotential, n_classes: int) -> None:
        super().__init__()
        self.extractor, self.potential = extractor, potential
        self.classifier = nn.Linear(potential.dim, n_classes)
        if potential.n_steps == 0:
            potential.requires_grad_(False)

    def features(self, images: Tensor) -> Tensor:
        """Unrefined features x_0 (B x D). Images come in the parameters' dtype: under trainer.precision=64-true
        the weights are float64 while k-means, figures and robustness read float32 data directly."""
        return self.extractor(images.to(self.classifier.weight.dtype))

    def states(self, images: Tensor) -> list[Tensor]:
        """Every refinement state x_0 .. x_T of the images' features (each B x D, in the autograd graph)."""
        return self.potential.refine(self.features(images))

    def forward(self, images: Tensor, all_steps: bool = False) -> Tensor:
        """Logits of the refined features (B x C), or of every state x_0..x_T ((T+1) x B x C)."""
        states = self.states(images)
        return self.classifier(torch.stack(states) if all_steps else states[-1])
