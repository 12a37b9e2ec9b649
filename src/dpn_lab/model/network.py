"""DPNClassifier, the network the DPN paper calls its full architecture: feature extractor ->
DenoisingPotential -> linear classifier."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dpn_lab.model.potential import DenoisingPotential


class DPNClassifier(nn.Module):
    """Classifies images by the linear read-out of their refined features.

    With n_steps = 0 the potential never touches the output, so its parameters are frozen: an optimizer
    or DDP would otherwise track parameters that can never receive a gradient. The capacity-matched control
    passes a `residual` module and a potential with n_steps = 0 (dpn_lab.model.residual_control).
    """

    def __init__(
        self,
        extractor: nn.Module,
        potential: DenoisingPotential,
        n_classes: int,
        residual: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.extractor, self.potential, self.residual = extractor, potential, residual
        self.classifier = nn.Linear(potential.dim, n_classes)
        if potential.n_steps == 0:
            potential.requires_grad_(False)

    def features(self, images: Tensor) -> Tensor:
        """Unrefined features x_0 (B x D). Images come in the parameters' dtype: under trainer.precision=64-true
        the weights are float64 while k-means, figures and robustness read float32 data directly."""
        return self.extractor(images.to(self.classifier.weight.dtype))

    def states(self, images: Tensor) -> list[Tensor]:
        """Every refinement state x_0 .. x_T of the images' features (each B x D, in the autograd graph); for
        the capacity-matched control (`residual`, with an idle potential), x_0 and x_0 + MLP(x_0)."""
        features = self.features(images)
        if self.residual is not None:
            return [features, self.residual(features)]
        return self.potential.refine(features)

    @property
    def refines(self) -> bool:
        """Whether x_T can differ from x_0 (False for the T = 0 ablation)."""
        return self.residual is not None or self.potential.n_steps > 0

    def refined(self, features: Tensor) -> Tensor:
        """x_T of features x_0: the ascent's last state, or the control's x_0 + MLP(x_0)."""
        return self.residual(features) if self.residual is not None else self.potential(features)

    def forward(self, images: Tensor, all_steps: bool = False) -> Tensor:
        """Logits of the refined features (B x C), or of every state x_0..x_T ((T+1) x B x C)."""
        states = self.states(images)
        return self.classifier(torch.stack(states) if all_steps else states[-1])
