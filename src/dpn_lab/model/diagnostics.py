"""Diagnostics of a trained potential: is it placed on the features, and does the refinement do anything a
linear read-out could not?

Every quantity is computed on a set of unrefined features x_0 (N x D), their refined states x_1..x_T and
their labels. Logged under `potential/` every validation epoch and shown by `dpn_lab.analyze`:

    center_spread_ratio  rms_i |mu_i - mean(mu)| / rms_n |x_n - mean(x)|   (<< 1: the centers clump)
    resp_entropy         mean_n H(r(x_0))                                   (0: one component claims each point)
    resp_max             mean_n max_i r_i(x_0)
    components_used      #components that are the argmax of r(x_0) for >= 1% of the points
    displacement         mean_n |x_T - x_0| / rms_n |x_0 - mean(x_0)|
    affine_r2            R^2 of the least-squares fit x_T ~ W x_0 + b      (1: the ascent is an affine map)
    acc_step_<t>         accuracy of the linear read-out applied to x_t, t = 0..T
    acc_responsibility   accuracy of labelling x_T by its most responsible component's majority label
"""

from __future__ import annotations

import torch
from torch import Tensor

from dpn_lab.model.potential import DenoisingPotential

USED_FRACTION = 0.01  # a component counts as used when it is the argmax for at least this share of points


def rms_spread(points: Tensor) -> Tensor:
    """sqrt(mean_n |p_n - mean(p)|^2)."""
    return (points - points.mean(0)).pow(2).sum(1).mean().sqrt()


def affine_r2(source: Tensor, target: Tensor) -> Tensor:
    """R^2 = 1 - SS_res / SS_tot of the least-squares fit target ~ W source + b (both N x D)."""
    design = torch.cat([source, torch.ones(len(source), 1, dtype=source.dtype, device=source.device)], 1)
    solution = torch.linalg.lstsq(design.double().cpu(), target.double().cpu()).solution
    residual = target.double().cpu() - design.double().cpu() @ solution
    total = (target - target.mean(0)).double().pow(2).sum().cpu()
    return 1 - residual.pow(2).sum() / total if total > 0 else torch.ones((), dtype=torch.float64)


@torch.no_grad()
def potential_diagnostics(
    potential: DenoisingPotential,
    classifier: torch.nn.Module,
    states: list[Tensor],
    labels: Tensor,
    component_labels: Tensor | None = None,
) -> dict[str, float]:
    """The `potential/` diagnostics (module docstring) of states x_0..x_T (each N x D) with their labels.

    component_labels (K): each component's majority training label; without it acc_responsibility is left
    out.
    """
    x0, xT = states[0], states[-1]
    feature_rms = rms_spread(x0)
    r0, rT = potential.statistics([x0, xT]).responsibilities
    entropy = -(r0 * r0.clamp_min(1e-30).log()).sum(1).mean()
    share = torch.bincount(r0.argmax(1), minlength=potential.n_components).float() / len(x0)
    out = {
        "center_spread_ratio": rms_spread(potential.mu) / feature_rms,
        "resp_entropy": entropy,
        "resp_max": r0.max(1).values.mean(),
        "components_used": (share >= USED_FRACTION).sum(),
        "displacement": (xT - x0).norm(dim=1).mean() / feature_rms,
        "affine_r2": affine_r2(x0, xT),
    }
    for t, state in enumerate(states):
        # the states may be bf16 (autocast, trainer.precision=bf16-mixed) while the classifier is float32
        out[f"acc_step_{t}"] = (
            (classifier(state.to(classifier.weight.dtype)).argmax(1) == labels).float().mean()
        )
    if component_labels is not None:
        predicted = component_labels[rT.argmax(1)]
        out["acc_responsibility"] = (predicted == labels).float().mean()
    return {key: float(value) for key, value in out.items()}


@torch.no_grad()
def component_label_counts(
    potential: DenoisingPotential, refined: Tensor, labels: Tensor, n_classes: int
) -> Tensor:
    """K x C counts of (most responsible component for x_T, label): each component's votes for the
    responsibility classifier."""
    winners = potential.responsibilities(refined).argmax(1)
    counts = torch.zeros(potential.n_components, n_classes, device=refined.device)
    return counts.index_put_((winners, labels), torch.ones_like(winners, dtype=counts.dtype), accumulate=True)
