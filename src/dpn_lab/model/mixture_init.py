"""Data-driven initialisation of the potential: k-means centers, or a full Gaussian-mixture fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.covariance import LedoitWolf
from sklearn.mixture import GaussianMixture
from torch import Tensor

from dpn_lab.errors import ConfigError
from dpn_lab.model.options import INIT_METHODS
from dpn_lab.model.potential import DenoisingPotential
from dpn_lab.rules import Choice

REG_COVAR = 1e-4  # added to every fitted variance: a cluster of identical points keeps a finite precision
# The sklearn covariance family fitted for each of model.covariance; lowrank is reduced from a full fit.
_GMM_FAMILY = {"full": "full", "diag": "diag", "spherical": "spherical", "lowrank": "full"}


@dataclass
class InitResult:
    """What an initialisation did, for logging."""

    method: str
    n_samples: int
    inertia: float  # k-means inertia, or the GMM's negative mean log-likelihood per sample


def _check_enough(n_components: int, n_samples: int) -> None:
    if n_components > n_samples:
        raise ConfigError(
            f"n_components={n_components} exceeds the {n_samples} feature vectors available to initialise "
            "the centers: lower model.n_components or use more samples"
        )


def kmeans_parameters(
    data: np.ndarray, n_components: int, covariance: str, rank: int, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """k-means++ on `data` (N x D), and a Gaussian per cluster fitted to its members.

    Returns the potential's parameters in the form of `gmm_parameters` and the k-means inertia:
    centers; precisions from each cluster's spread (diag: inverse within-cluster variance per dimension;
    spherical: inverse mean variance; full/lowrank: inverse of the Ledoit-Wolf-shrunk cluster covariance,
    lowrank then reduced as in the GMM fit); log-weights from the cluster sizes. REG_COVAR is added to
    every variance, as the GMM fit does; a cluster with fewer than two members takes the variance of all
    features.
    """
    _check_enough(n_components, len(data))
    km = KMeans(n_clusters=n_components, init="k-means++", n_init=3, random_state=seed).fit(data)
    overall = data.var(0)
    covariances = []
    for k in range(n_components):
        members = data[km.labels_ == k]
        if covariance in ("full", "lowrank"):
            cov = LedoitWolf().fit(members).covariance_ if len(members) > 1 else np.diag(overall)
        else:
            cov = np.diag(members.var(0) if len(members) > 1 else overall)
        covariances.append(cov + REG_COVAR * np.eye(data.shape[1]))
    cov = np.stack(covariances)
    params: dict[str, np.ndarray] = {"mu": km.cluster_centers_}
    if covariance == "diag":
        params["precision_diag"] = 1 / np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    elif covariance == "spherical":
        params["precision_diag"] = 1 / np.sqrt(np.diagonal(cov, axis1=1, axis2=2).mean(1, keepdims=True))
    else:
        P = np.linalg.inv(cov)
        chol = np.linalg.cholesky(P)  # P = chol chol^T, so A = chol^T
        if covariance == "full":
            params["precision_factor"] = chol.transpose(0, 2, 1)
        else:
            params["precision_diag"], params["precision_factor"] = _lowrank_from_precision(P, rank)
    sizes = np.bincount(km.labels_, minlength=n_components)
    params["log_weights"] = np.log(np.maximum(sizes, 1) / len(data))
    return params, float(km.inertia_)


def _lowrank_from_precision(P: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """P ~ lam * I + U U^T with U the top-`rank` eigen-directions (the precision form of probabilistic PCA).

    Returns (a = sqrt(lam) * 1, F = U^T) per component.
    """
    eigvals, eigvecs = np.linalg.eigh(P)  # ascending
    lam = eigvals[:, :-rank].mean(axis=1)  # K
    top_vals, top_vecs = eigvals[:, -rank:], eigvecs[:, :, -rank:]  # K x r, K x D x r
    U = top_vecs * np.sqrt(np.clip(top_vals - lam[:, None], 0.0, None))[:, None, :]
    a = np.repeat(np.sqrt(lam)[:, None], P.shape[-1], axis=1)
    return a, U.transpose(0, 2, 1)


def gmm_parameters(
    data: np.ndarray, n_components: int, covariance: str, rank: int, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """Fit sklearn's GaussianMixture (k-means start) of the family matching `covariance`.

    Returns the potential's parameters {mu, precision_diag, precision_factor, c} (absent keys: not in the
    family) and the negative mean log-likelihood. With c_i = log pi_i + log|det A_i|, phi is the fitted
    mixture's log-density up to the constant D/2 log(2 pi).
    """
    _check_enough(n_components, len(data))
    gmm = GaussianMixture(
        n_components,
        covariance_type=_GMM_FAMILY[covariance],
        init_params="kmeans",
        random_state=seed,
        reg_covar=REG_COVAR,
    ).fit(data)
    chol = gmm.precisions_cholesky_  # precision = chol @ chol^T
    params: dict[str, np.ndarray] = {"mu": gmm.means_}
    if covariance == "full":
        params["precision_factor"] = chol.transpose(0, 2, 1)
    elif covariance == "diag":
        params["precision_diag"] = chol
    elif covariance == "spherical":
        params["precision_diag"] = chol[:, None]
    else:
        params["precision_diag"], params["precision_factor"] = _lowrank_from_precision(
            chol @ chol.transpose(0, 2, 1), rank
        )
    params["log_weights"] = np.log(gmm.weights_)
    return params, float(-gmm.score(data))


@torch.no_grad()
def initialize_potential(
    potential: DenoisingPotential,
    features: Tensor,
    method: str = "kmeans",
    seed: int = 0,
    step_limit: float | None = None,
) -> InitResult:
    """Set the potential's centers, precisions and weights from features (N x D, all of them: the caller
    bounds the sample, `model.init_samples` in a run), by k-means with per-cluster Gaussians
    (`kmeans_parameters`) or a Gaussian-mixture fit (`gmm_parameters`).

    With c_i = log pi_i + log|det A_i| the potential is the fitted mixture's log-density up to a constant.
    `step_limit` then caps eta so that eta * lambda_max(P_i) <= step_limit for every component: the ascent
    is stable for eta * lambda_max < 2, and a fit to tight clusters can have large precisions.
    """
    Choice(INIT_METHODS).require("model.init", method)
    data = features.detach().to("cpu", torch.float64).numpy()
    rank = potential.precision_factor.shape[1] if potential.covariance == "lowrank" else 0
    fit = kmeans_parameters if method == "kmeans" else gmm_parameters
    params, score = fit(data, potential.n_components, potential.covariance, rank, seed)

    def assign(param: torch.nn.Parameter, value: np.ndarray) -> None:
        param.copy_(torch.as_tensor(value).reshape(param.shape))

    assign(potential.mu, params["mu"])
    for name in ("precision_diag", "precision_factor"):
        if name in params:
            assign(getattr(potential, name), params[name])
    half_logdet = 0.5 * torch.linalg.slogdet(potential.precision_matrices().double()).logabsdet
    assign(potential.c, params["log_weights"] + half_logdet.cpu().numpy())
    if step_limit is not None and potential.n_steps:
        cap_step_size(potential, step_limit)
    return InitResult(method, len(data), score)


@torch.no_grad()
def cap_step_size(potential: DenoisingPotential, limit: float) -> None:
    """Lower every eta_t so that eta_t * lambda_max <= limit, lambda_max the largest eigenvalue of any P_i."""
    lam = float(torch.linalg.eigvalsh(potential.precision_matrices().double()).max())
    eta = float(potential.step_sizes().max())
    if eta * lam > limit:
        potential.set_step_size(
            float(torch.nn.functional.softplus(potential.step_size_raw).max()) * limit / (eta * lam)
        )


# N's smallest eigenvalue below this fraction of its mean is refused as singular
SINGULAR_NOISE = 1e-8


def feature_noise(clean: Tensor, corrupted: Tensor, noise_model: str) -> tuple[Tensor, Tensor]:
    """The mean b and covariance N of the feature noise x_0(corrupted) - x_0(clean) (pairs of rows, N x D),
    in float64; `isotropic`: b = 0 and N = tr(N)/D I. ConfigError when N is singular."""
    diff = (corrupted - clean).double()
    shift, cov = diff.mean(0), torch.cov(diff.T, correction=1).reshape(diff.shape[1], diff.shape[1])
    if noise_model == "isotropic":
        shift, cov = (
            torch.zeros_like(shift),
            torch.eye(len(shift), dtype=cov.dtype) * cov.trace() / len(shift),
        )
    eigenvalues = torch.linalg.eigvalsh(cov)
    if not bool(eigenvalues[0] > SINGULAR_NOISE * eigenvalues.mean().clamp_min(1e-300)):
        raise ConfigError(
            f"model.noise_pairs: the feature noise covariance estimated from {len(diff)} pairs is singular "
            f"(eigenvalues {float(eigenvalues[0]):.3g} to {float(eigenvalues[-1]):.3g}): use a severity that moves "
            "the features, more pairs (model.init_samples > model.feature_dim), or model.noise_model=isotropic"
        )
    return shift, cov


@torch.no_grad()
def convolve_with_noise(potential: DenoisingPotential, shift: Tensor, covariance: Tensor) -> None:
    """Turn the fitted mixture of clean features (P_i = S_i^-1, c_i = log pi_i + 1/2 log det P_i; covariance=full)
    into the density of features observed with noise N(shift, covariance): P_i <- (S_i + N)^-1, c_i <- log pi_i
    + 1/2 log det P_i. The step becomes Tweedie's: b and N for step=noise_model; for the scalar step (isotropic
    noise, b = 0) eta = tr(N)/D."""
    P = potential.precision_matrices().double()
    noisy = torch.linalg.inv(torch.linalg.inv(P) + covariance)
    noisy = 0.5 * (noisy + noisy.transpose(1, 2))
    log_pi = potential.c.double() - 0.5 * torch.linalg.slogdet(P).logabsdet
    potential.precision_factor.copy_(torch.linalg.cholesky(noisy).transpose(1, 2))
    potential.c.copy_(log_pi + 0.5 * torch.linalg.slogdet(noisy).logabsdet)
    if potential.config.step == "noise_model":
        potential.noise_shift.copy_(shift)
        potential.noise_covariance.copy_(covariance)
    else:
        potential.set_step_size(float(covariance.trace()) / len(covariance))
