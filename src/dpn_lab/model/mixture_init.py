"""Data-driven initialisation of the potential: k-means centers, or a full Gaussian-mixture fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture
from torch import Tensor

from dpn_lab.model.potential import DenoisingPotential

INIT_METHODS = ("kmeans", "gmm")
# The sklearn covariance family fitted for each precision family; lowrank is reduced from a full fit.
_GMM_FAMILY = {"full": "full", "diag": "diag", "spherical": "spherical", "lowrank": "full"}


@dataclass
class InitResult:
    """What an initialisation did, for logging."""

    method: str
    n_samples: int
    inertia: float  # k-means inertia, or the GMM's negative mean log-likelihood per sample


def sample_features(features: Tensor, max_samples: int, seed: int) -> np.ndarray:
    """A bounded random subset (without replacement) of the rows of `features`, as float64 numpy."""
    data = features.detach().to("cpu", torch.float64).numpy()
    if len(data) > max_samples:
        data = data[np.random.default_rng(seed).choice(len(data), max_samples, replace=False)]
    return data


def _check_enough(n_components: int, n_samples: int) -> None:
    if n_components > n_samples:
        raise ValueError(
            f"n_components={n_components} exceeds the {n_samples} feature vectors available to initialise "
            "the centers: lower model.n_components or use more samples"
        )


def kmeans_centers(data: np.ndarray, n_components: int, seed: int) -> tuple[np.ndarray, float]:
    """k-means++ on `data` (N x D) -> (centers K x D, inertia)."""
    _check_enough(n_components, len(data))
    km = KMeans(n_clusters=n_components, init="k-means++", n_init=3, random_state=seed).fit(data)
    return km.cluster_centers_, float(km.inertia_)


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
    data: np.ndarray, n_components: int, precision: str, rank: int, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """Fit sklearn's GaussianMixture (k-means start) of the family matching `precision`.

    Returns the potential's parameters {mu, precision_diag, precision_factor, c} (absent keys: not in the
    family) and the negative mean log-likelihood. With c_i = log pi_i + log|det A_i|, phi is the fitted
    mixture's log-density up to the constant D/2 log(2 pi).
    """
    _check_enough(n_components, len(data))
    gmm = GaussianMixture(
        n_components,
        covariance_type=_GMM_FAMILY[precision],
        init_params="kmeans",
        random_state=seed,
        reg_covar=1e-4,
    ).fit(data)
    chol = gmm.precisions_cholesky_  # precision = chol @ chol^T
    params: dict[str, np.ndarray] = {"mu": gmm.means_}
    if precision == "full":
        params["precision_factor"] = chol.transpose(0, 2, 1)
    elif precision == "diag":
        params["precision_diag"] = chol
    elif precision == "spherical":
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
    max_samples: int = 10_000,
    seed: int = 0,
) -> InitResult:
    """Set the potential's centers (kmeans) or centers, precisions and weights (gmm) from features (N x D)."""
    if method not in INIT_METHODS:
        raise ValueError(f"init={method!r} is not allowed; choose one of: {', '.join(INIT_METHODS)}")
    data = sample_features(features, max_samples, seed)
    K = potential.n_components

    def assign(param: torch.nn.Parameter, value: np.ndarray) -> None:
        param.copy_(torch.as_tensor(value).reshape(param.shape))

    if method == "kmeans":
        centers, score = kmeans_centers(data, K, seed)
        assign(potential.mu, centers)
    else:
        rank = potential.precision_factor.shape[1] if potential.precision == "lowrank" else 0
        params, score = gmm_parameters(data, K, potential.precision, rank, seed)
        assign(potential.mu, params["mu"])
        for name in ("precision_diag", "precision_factor"):
            if name in params:
                assign(getattr(potential, name), params[name])
        half_logdet = 0.5 * torch.linalg.slogdet(potential.precision_matrices().double()).logabsdet
        assign(potential.c, params["log_weights"] + half_logdet.cpu().numpy())
    return InitResult(method, len(data), score)
