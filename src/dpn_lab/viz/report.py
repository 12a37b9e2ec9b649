"""Every figure of a DPNClassifier on a sample of its data, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dpn_lab.model.inference import evaluating, in_chunks
from dpn_lab.model.network import DPNClassifier
from dpn_lab.viz.plots import (
    covariance_figure,
    feature_map,
    prototype_grid,
    save_figure,
    training_curves,
    trajectory_map,
)


@torch.no_grad()
def write_figures(
    net: DPNClassifier,
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
    with evaluating(net):
        device = next(net.parameters()).device
        features = in_chunks(net, net.features, inputs).float().cpu()
        potential = net.potential
        mu, weights = potential.mu.detach().float().cpu(), potential.weights().detach().float().cpu()
        figures = {}
        if inputs.dim() == 4:
            figures["prototypes"] = prototype_grid(inputs, features, mu, weights)
        figures["feature_map"] = feature_map(features, labels, mu, weights, n_classes)
        if potential.n_steps > 0 and potential.active:
            pick = torch.randperm(len(features), generator=torch.Generator().manual_seed(0))[:n_paths]
            paths = torch.stack(net.states(inputs[pick].to(device)), dim=1)  # B x (T+1) x D

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
            save_figure(figure, written[kind])
        return written
