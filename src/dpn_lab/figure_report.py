"""Every figure of a FullArchitecture on a sample of its data, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from dpn_lab.architecture import FullArchitecture
from dpn_lab.figures import covariance_figure, feature_map, prototype_grid, training_curves, trajectory_map


@torch.no_grad()
def write_figures(
    net: FullArchitecture,
    inputs: Tensor,
    labels: Tensor,
    n_classes: int,
    history: dict[str, list[tuple[int, float]]] | None,
    directory: Path,
    tag: str,
    n_paths: int = 60,
) -> dict[str, Path]:
    """Render the figures that apply and save them as directory/<kind>_<tag>.png; returns {kind: path}.

    Prototypes need image inputs, trajectories an active potential with steps, curves a history.
    """
    directory.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        features = torch.cat([net.features(chunk.to(device)) for chunk in inputs.split(512)]).float().cpu()
        potential = net.potential
        mu, weights = potential.mu.detach().float().cpu(), potential.weights().detach().float().cpu()
        figures = {}
        if inputs.dim() == 4:
            figures["prototypes"] = prototype_grid(inputs, features, mu, weights)
        figures["feature_map"] = feature_map(features, labels, mu, weights, n_classes)
        if potential.n_steps > 0 and potential.active:
            pick = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:n_paths]
            _, paths = potential(features[pick].to(device), return_trajectory=True)

            def phi(points: Tensor) -> Tensor:
                return potential.compute_potential(points.to(device)).float().cpu()

            figures["trajectories"] = trajectory_map(
                features, paths.float().cpu(), labels[pick], phi, n_classes
            )
        figures["covariance"] = covariance_figure(
            potential.covariance_matrices().detach().float().cpu(), weights
        )
        if history:
            figures["training_curves"] = training_curves(history)
        written = {}
        for kind, figure in figures.items():
            written[kind] = directory / f"{kind}_{tag}.png"
            figure.savefig(written[kind], dpi=110)
            plt.close(figure)
        return written
    finally:
        net.train(was_training)
