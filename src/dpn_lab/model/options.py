"""The model's options, each written once (name, default, rule, meaning): PotentialConfig for the potential,
TrainingConfig for what DPNLitModule builds around it and how it trains.

Torch-free: `dpn_lab.config` checks a command line with these before torch is imported (a mistake costs one
line in about a second, not the seconds torch and Lightning take), and `dpn_lab.conf` makes their defaults the
`model.*` keys of the config (the config group nodes model/_potential and model/_training). A new model option
is a field here, the code that uses it, its test and its line in docs/method.md."""

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
# model.extractor_kwargs.<name> of the CNN and ResNet extractors (checked before torch loads and by them)
EXTRACTOR_KWARG_RULES = {"norm": Choice(CNN_NORMS), "pool": Choice(CNN_POOLS)}
CENTER_UPDATES = ("none", "ema")
REFINEMENTS = ("potential", "residual_mlp")  # residual_mlp: the capacity-matched control
STEPS = ("scalar", "noise_model")
# what the potential is asked to be; every objective but classification needs a frozen extractor
POTENTIAL_OBJECTIVES = ("classification", "density", "tweedie", "denoise")
FITTED_OBJECTIVES = ("density", "tweedie")  # fitted when fitting starts, then left fixed
NOISE_MODELS = ("full", "isotropic")


def option(default: Any, rule: Choice | Number | None, meaning: str) -> Any:
    """An option: its default, the rule its values obey (None: a structured value that `dpn_lab.config` checks
    with a function of its own) and what it means."""
    metadata = {"rule": rule, "meaning": meaning}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_fields(options: Any) -> None:
    """ConfigError naming the first field of a config dataclass whose value breaks its rule."""
    for f in fields(options):
        if f.metadata["rule"]:
            f.metadata["rule"].require(f.name, getattr(options, f.name))


def rules(*configs: type) -> dict[str, Choice | Number]:
    """The `model.<field>` rules of config dataclasses (the fields with one)."""
    return {f"model.{f.name}": f.metadata["rule"] for c in configs for f in fields(c) if f.metadata["rule"]}


@dataclass(frozen=True)
class PotentialConfig:
    """The potential's options: the `model.*` keys of the config (with these defaults), their check before
    torch loads (`dpn_lab.config.MODEL_RULES`) and DenoisingPotential's arguments all follow from the fields.
    Checkpoints store them as plain values."""

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
    step: str = option(
        "scalar",
        Choice(STEPS),
        "scalar: x + eta grad phi(x); noise_model: Tweedie's step (x - b) + N grad phi(x - b), with b and N the "
        "mean and covariance of the feature noise measured from pairs (potential_objective=tweedie sets them)",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        problem = potential_problem(self)
        if problem:
            raise ConfigError(problem)


def potential_problem(p: Any) -> str | None:
    """What is wrong with potential options (`p`: anything with their names as attributes) that are each
    allowed but not together, or None."""
    if p.covariance == "lowrank" and p.rank > p.feature_dim:
        return f"rank={p.rank} is out of range: must be <= feature_dim={p.feature_dim} for covariance=lowrank"
    if p.step == "noise_model" and p.n_steps != 1:
        return (
            f"n_steps={p.n_steps} is not allowed with step=noise_model: use 1 (one step of Tweedie's formula is "
            "the posterior mean of the clean features; more steps overshoot it)"
        )
    if p.step == "noise_model" and p.covariance != "full":
        return (
            f"covariance={p.covariance} is not allowed with step=noise_model: use full (the noisy mixture's "
            "precisions (S_i + N)^-1 are full matrices when the noise covariance N is)"
        )
    return None


def training_problem(m: Any, noise_is_attack: bool) -> str | None:
    """What is wrong with model options (`m`: PotentialConfig's and TrainingConfig's names as attributes) that
    are each allowed but not together, or None. `noise_is_attack`: noise_pairs names an attack."""
    objective = m.potential_objective
    if m.freeze_extractor and not m.init_from:
        return "freeze_extractor=true needs init_from=<a stage-1 checkpoint>: a frozen random extractor is no model"
    if objective != "classification" and not m.freeze_extractor:
        return (
            f"potential_objective={objective} needs freeze_extractor=true (and init_from): a density or "
            "denoiser is fitted to the features it models, which training the extractor would move"
        )
    if objective in ("tweedie", "denoise") and not m.noise_pairs:
        return (
            f"potential_objective={objective} needs noise_pairs (clean and corrupted features of each image)"
        )
    if objective == "tweedie" and noise_is_attack:
        return "potential_objective=tweedie needs noise_pairs to be a corruption: an attack is no noise model"
    if (objective == "tweedie") != (m.step == "noise_model"):
        return (
            f"step={m.step} is not allowed with potential_objective={objective}: step=noise_model goes with "
            "tweedie, and only with it (its b and N are measured then)"
        )
    if objective in FITTED_OBJECTIVES and m.center_update != "none":
        return f"center_update={m.center_update} is not allowed with potential_objective={objective}: its fit stays fixed"
    if objective == "denoise" and m.refinement == "potential" and m.covariance != "full":
        return (
            f"covariance={m.covariance} is not allowed with potential_objective=denoise: use full (it starts from "
            "the fit convolved with the feature noise, (S_i + N)^-1)"
        )
    if objective == "denoise" and not m.consistency_weight:
        return (
            "potential_objective=denoise needs consistency_weight > 0: it is the denoising objective's weight"
        )
    if m.refinement == "residual_mlp" and objective not in ("classification", "denoise"):
        return f"potential_objective={objective} is not allowed with refinement=residual_mlp: use classification or denoise"
    if objective != "classification" and m.refinement == "potential" and m.n_steps == 0:
        return f"potential_objective={objective} is not allowed with n_steps=0: nothing refines (use classification)"
    return None


@dataclass(frozen=True)
class TrainingConfig:
    """What DPNLitModule builds around the potential and how it trains it: the other `model.*` keys, defined
    like PotentialConfig's (the optimizer and scheduler, Hydra factories, stay in conf/model/dpn.yaml)."""

    extractor: str = option(
        "cnn", Choice(EXTRACTOR_NAMES), "cnn (images) | resnet18 | resnet34 (CIFAR stem) | mlp (any input)"
    )
    extractor_kwargs: dict = option(
        {},
        None,
        "the extractor's own arguments, e.g. {hidden: [256, 256]} (mlp); cnn: {channels: [32, 64], norm: "
        "group|batch, pool: flatten|avg}; resnet: {norm: batch|group} (add keys with +model.extractor_kwargs.x=)",
    )
    init: str = option(
        "kmeans",
        Choice(INIT_METHODS),
        "kmeans | gmm, run on training features when fitting starts: centers, precisions (cluster spread) "
        "and weights (cluster sizes)",
    )
    init_samples: int = option(2000, Number(integer=True, low=1), "training images the init fits")
    init_step_limit: float | None = option(
        0.25,
        Number(low=0, low_open=True, nullable=True),
        "after init, eta is capped so that eta * lambda_max <= this (null: no cap); 0.25 chosen on validation "
        "data (docs/method.md, Initialisation)",
    )
    noise_pairs: dict | None = option(
        None,
        None,
        "e.g. {kind: gaussian, severity: 0.3}: train on each batch and a corrupted copy (a corruption or an "
        "attack, {kind: pgd_linf, severity: eps, steps: n})",
    )
    consistency_weight: float = option(
        0.0, Number(low=0), "with noise_pairs: weight of |x_T(corrupted) - x_0(clean)|^2 / var"
    )
    center_update: str = option(
        "none", Choice(CENTER_UPDATES), "none | ema: centers follow responsibility-weighted batch means"
    )
    center_momentum: float = option(0.9, Number(low=0, high=1, high_open=True), "center_update=ema only")
    refinement: str = option(
        "potential",
        Choice(REFINEMENTS),
        "potential | residual_mlp: x_0 + MLP(x_0) with the potential's parameter count (the control)",
    )
    refinement_weight_decay: float | None = option(
        None,
        Number(low=0, nullable=True),
        "weight decay of the refinement's parameters (potential or control); null: the optimizer's",
    )
    compile: bool = option(
        False, Choice((True, False)), "torch.compile the refinement (no gain on CPU; try it on GPUs)"
    )
    init_from: str | None = option(
        None,
        None,
        "stage 2: a checkpoint of the same architecture and data (or a run directory holding its best one) whose "
        "extractor and classifier weights start this run; read as data, like eval's ckpt_path",
    )
    freeze_extractor: bool = option(
        False,
        Choice((True, False)),
        "keep the extractor's weights (and BatchNorm statistics) as init_from left them; needs init_from",
    )
    potential_objective: str = option(
        "classification",
        Choice(POTENTIAL_OBJECTIVES),
        "what the potential is asked to be. classification: trained through the loss (end to end); density: "
        "the mixture fitted to the frozen clean features by `init`, normalised, left fixed; tweedie: that "
        "fit convolved with the feature noise of noise_pairs (step=noise_model, one step: the posterior mean); "
        "denoise: trained by the consistency term alone, from the fit convolved with the isotropic feature noise "
        "(eta = tr(N)/D: the scalar-step Bayes denoiser). Except classification, the "
        "classifier reads the refined features without back-propagating into the refinement",
    )
    noise_model: str = option(
        "full",
        Choice(NOISE_MODELS),
        "tweedie's feature noise: full (mean b and covariance N of x_0(corrupted) - x_0(clean)) or isotropic "
        "(b = 0, N = tr(N)/D I)",
    )

    def __post_init__(self) -> None:
        check_fields(self)
