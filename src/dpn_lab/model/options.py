"""The model's options: the values each accepts, and PotentialConfig, where every option of the potential is
written once (name, default, rule, meaning).

Torch-free: `dpn_lab.config` checks a command line with these before torch is imported (a mistake costs one
line in about a second, not the seconds torch and Lightning take), and `dpn_lab.conf` makes PotentialConfig's
defaults the `model.*` keys of the config (the config group node model/_potential)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from dpn_lab.errors import ConfigError
from dpn_lab.rules import Choice, Number

COVARIANCES = ("full", "diag", "spherical", "lowrank")  # the families of P_i = A_i^T A_i
GRADIENT_IMPLS = ("closed_form", "autograd")
GRAD_MODES = ("unrolled", "detach")
EXTRACTOR_NAMES = ("mlp", "cnn", "resnet18", "resnet34")
IMAGE_EXTRACTORS = ("cnn", "resnet18", "resnet34")  # take (channels, height, width) inputs
MIN_RESNET_SIDE = 8  # the ResNets' three stride-2 stages divide the side by 8
CNN_NORMS = ("batch", "group")
CNN_POOLS = ("avg", "flatten")
INIT_METHODS = ("kmeans", "gmm")
CENTER_UPDATES = ("none", "ema")
REFINEMENTS = ("potential", "residual_mlp")  # residual_mlp: the capacity-matched control


def option(default: Any, rule: Choice | Number, meaning: str) -> Any:
    """A PotentialConfig field: its default, the rule its values obey and what it means."""
    return field(default=default, metadata={"rule": rule, "meaning": meaning})


@dataclass(frozen=True)
class PotentialConfig:
    """The potential's options, each defined here once: the `model.*` keys of the config (with these
    defaults), their check before torch loads (`dpn_lab.config.MODEL_RULES`) and DenoisingPotential's
    arguments all follow from the fields. Checkpoints store them as plain values. A new option is a field here,
    the code that uses it, its test and its line in docs/method.md."""

    feature_dim: int = option(32, Number(integer=True, low=1), "feature dimension D (the extractor's output)")
    n_components: int = option(16, Number(integer=True, low=1), "number of mixture components K")
    n_steps: int = option(
        5, Number(integer=True, low=0), "ascent steps T; 0 makes the potential the identity"
    )
    covariance: str = option("diag", Choice(COVARIANCES), "the family of the precisions P_i = A_i^T A_i")
    rank: int = option(4, Number(integer=True, low=1), "rank of the low-rank term (covariance=lowrank only)")
    init_step_size: float = option(
        0.1, Number(low=0, low_open=True), "eta at construction (one for every step)"
    )
    init_precision: float = option(
        1.0, Number(low=0, low_open=True), "every P_i starts as init_precision * I (until the k-means fit)"
    )
    gradient_impl: str = option(
        "closed_form",
        Choice(GRADIENT_IMPLS),
        "closed_form (hand-written GEMM kernels) or autograd (torch.autograd.grad, the reference)",
    )
    grad_mode: str = option(
        "unrolled",
        Choice(GRAD_MODES),
        "unrolled: back-propagate through every step (mu, A, c and eta learn from all of them and dL/dx_0 "
        "reaches the extractor); detach: the original paper's recipe, the state detached before every step "
        "after the first (only the last step trains, and for n_steps >= 2 the extractor gets no gradient "
        "through the refinement)",
    )
    checkpoint_steps: bool = option(
        False,
        Choice((True, False)),
        "with unrolled: keep O(B (D + K)) per step and recompute the rest in backward",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            problem = f.metadata["rule"].check(value)
            if problem:
                raise ConfigError(f"{f.name}={value!r} {problem}")
        problem = potential_problem(self.covariance, self.rank, self.feature_dim)
        if problem:
            raise ConfigError(problem)


def potential_problem(covariance: str, rank: int, feature_dim: int) -> str | None:
    """What is wrong with options that are each allowed but not together, or None."""
    if covariance == "lowrank" and rank > feature_dim:
        return f"rank={rank} is out of range: must be <= feature_dim={feature_dim} for covariance=lowrank"
    return None
