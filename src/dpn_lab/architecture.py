"""The paper's FullArchitecture: feature extractor -> DenoisingPotential -> linear classifier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dpn_lab.center_init import InitResult, initialize_potential
from dpn_lab.potential import DenoisingPotential


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
        """Unrefined features x_0 (B x D)."""
        return self.extractor(images)

    def forward(self, images: Tensor, all_steps: bool = False) -> Tensor:
        """Logits of the refined features (B x C), or of every state x_0..x_T ((T+1) x B x C)."""
        x0 = self.extractor(images)
        if all_steps:
            return self.classifier(torch.stack(self.potential.refine(x0)))
        return self.classifier(self.potential(x0))

    def initialize_centers(
        self, features: Tensor, method: str = "kmeans", max_samples: int = 10_000, seed: int = 0
    ) -> InitResult:
        """Initialise the potential from extracted features (N x D): k-means centers or a GMM fit."""
        return initialize_potential(self.potential, features, method, max_samples, seed)
