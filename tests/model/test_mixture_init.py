"""k-means and GMM initialisation against the data-generating parameters."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from dpn_lab.model.mixture_init import initialize_potential
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


def match_rows(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each true row, the index of the nearest found row (asserting a one-to-one match)."""
    order = np.linalg.norm(truth[:, None] - found[None], axis=2).argmin(axis=1)
    assert sorted(order) == list(range(len(truth)))
    return order


def test_kmeans_puts_centers_on_the_blob_means():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    points = np.concatenate([m + 0.3 * rng.normal(size=(250, 3)) for m in means])
    potential = DenoisingPotential(PotentialConfig(3, 4, covariance="full"))
    sample = points[rng.permutation(len(points))[:600]]  # the caller bounds the sample (model.init_samples)
    result = initialize_potential(potential, torch.from_numpy(sample).float(), "kmeans", seed=0)
    assert result.n_samples == 600 and result.method == "kmeans"
    centers = potential.mu.detach().numpy()
    order = match_rows(centers, means)
    # a 600-point sample of 0.3-std blobs: each mean to within a few standard errors
    np.testing.assert_allclose(centers[order], means, atol=0.15)
    assert result.inertia == pytest.approx(600 * 3 * 0.09, rel=0.2)


GAUSSIANS = {
    "full": [
        np.array([[1.0, 0.6, 0], [0.6, 1.0, 0.2], [0, 0.2, 0.5]]),
        np.array([[0.5, -0.2, 0], [-0.2, 0.8, 0], [0, 0, 1.5]]),
    ],
    "diag": [np.diag([1.0, 0.3, 0.6]), np.diag([0.4, 1.2, 0.8])],
    "spherical": [0.5 * np.eye(3), 1.3 * np.eye(3)],
}


@pytest.mark.parametrize("covariance", sorted(GAUSSIANS))
def test_gmm_recovers_known_gaussians(covariance):
    rng = np.random.default_rng(1)
    means, weights, n = np.array([[0.0, 0, 0], [6, 6, 0]]), np.array([0.3, 0.7]), 20000
    covs = GAUSSIANS[covariance]
    labels = rng.choice(2, size=n, p=weights)
    points = np.stack([rng.multivariate_normal(means[k], covs[k]) for k in labels])
    potential = DenoisingPotential(PotentialConfig(3, 2, covariance=covariance)).double()
    initialize_potential(potential, torch.from_numpy(points), "gmm", seed=0)
    order = match_rows(potential.mu.detach().numpy(), means)
    np.testing.assert_allclose(potential.mu.detach().numpy()[order], means, atol=0.05)
    np.testing.assert_allclose(
        potential.covariance_matrices().detach().numpy()[order], np.array(covs), atol=0.06
    )
    # c_i = log pi_i + 1/2 log det P_i: the mixing proportions are softmax(c_i - 1/2 log det P_i)
    c = potential.c.detach().numpy() - 0.5 * np.linalg.slogdet(np.linalg.inv(np.array(covs)[order]))[1][order]
    np.testing.assert_allclose(np.exp(c[order]) / np.exp(c).sum(), weights, atol=0.02)
    # phi is the fitted mixture's log-density up to D/2 log(2 pi): compare with the true density
    x = points[:20]
    true_logpdf = logsumexp(
        [np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(2)], axis=0
    )
    phi = potential.compute_potential(torch.from_numpy(x)).detach().numpy() - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(phi, true_logpdf, rtol=0.03, atol=0.03)


def test_gmm_lowrank_recovers_isotropic_plus_rank_one_precision():
    rng = np.random.default_rng(2)
    v = np.array([1.0, 2.0, 0.0, -1.0])
    precision = 2.0 * np.eye(4) + np.outer(v, v)
    points = rng.multivariate_normal(np.zeros(4), np.linalg.inv(precision), size=40000)
    potential = DenoisingPotential(PotentialConfig(4, 1, covariance="lowrank", rank=1)).double()
    initialize_potential(potential, torch.from_numpy(points), "gmm", seed=0)
    np.testing.assert_allclose(potential.precision_matrices().detach().numpy()[0], precision, atol=0.15)


def test_more_components_than_samples_is_a_clear_error():
    potential = DenoisingPotential(PotentialConfig(2, 50, covariance="full"))
    with pytest.raises(ValueError, match="n_components=50 exceeds the 20 feature vectors"):
        initialize_potential(potential, torch.randn(20, 2), "kmeans")
    with pytest.raises(ValueError, match="init='spectral' is not allowed; choose one of: kmeans, gmm"):
        initialize_potential(potential, torch.randn(20, 2), "spectral")


def test_same_seed_same_centers():
    features = torch.randn(500, 5)
    centers = []
    for _ in range(2):
        potential = DenoisingPotential(PotentialConfig(5, 6, covariance="full"))
        initialize_potential(potential, features, "kmeans", seed=3)
        centers.append(potential.mu.detach().clone())
    assert torch.equal(*centers)


def test_initialize_centers_from_features():
    potential = DenoisingPotential(PotentialConfig(16, 5, covariance="full"))
    features = torch.cat([torch.full((30, 16), float(v)) for v in range(5)]) + 0.01 * torch.randn(150, 16)
    result = initialize_potential(potential, features[::3], "kmeans", seed=0)
    assert result.n_samples == 50
    centers = potential.mu.detach()
    assert sorted(centers.mean(1).round().tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_kmeans_sets_precisions_from_cluster_spread_and_weights_from_sizes():
    rng = np.random.default_rng(0)
    stds = np.array([[0.5, 2.0], [1.0, 0.25]])
    sizes = (3000, 1000)
    points = np.vstack(
        [rng.normal([-20.0, 0.0], stds[0], (sizes[0], 2)), rng.normal([20.0, 0.0], stds[1], (sizes[1], 2))]
    )
    potential = DenoisingPotential(PotentialConfig(2, 2, covariance="diag")).double()
    initialize_potential(potential, torch.from_numpy(points), "kmeans", seed=0)
    order = potential.mu[:, 0].argsort()
    precision = potential.precision_diag.detach()[order] ** 2
    np.testing.assert_allclose(precision.numpy(), 1 / stds**2, rtol=0.1)
    # phi is the mixture log-density: c_i - 1/2 log det P_i = log pi_i
    half_logdet = 0.5 * torch.log(precision).sum(1)
    pi = torch.exp(potential.c.detach()[order] - half_logdet)
    np.testing.assert_allclose(pi.numpy(), np.array(sizes) / sum(sizes), rtol=1e-6)


@pytest.mark.parametrize("covariance", ["full", "lowrank", "spherical"])
def test_kmeans_precisions_are_positive_definite_for_every_family(covariance):
    points = torch.randn(600, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    potential = DenoisingPotential(PotentialConfig(4, 3, covariance=covariance, rank=2)).double()
    initialize_potential(potential, points, "kmeans", seed=0)
    eigenvalues = torch.linalg.eigvalsh(potential.precision_matrices().detach())
    assert (eigenvalues > 0).all() and eigenvalues.max() < 1e3


def test_step_limit_caps_eta_times_the_largest_precision_eigenvalue():
    points = torch.randn(500, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.01
    potential = DenoisingPotential(
        PotentialConfig(3, 2, n_steps=3, covariance="diag", init_step_size=0.5)
    ).double()
    initialize_potential(potential, points, "kmeans", seed=0, step_limit=1.0)
    lam = torch.linalg.eigvalsh(potential.precision_matrices().detach()).max()
    assert float(potential.step_sizes().detach().max() * lam) == pytest.approx(1.0)
    loose = DenoisingPotential(
        PotentialConfig(3, 2, n_steps=3, covariance="diag", init_step_size=1e-6)
    ).double()
    initialize_potential(loose, points, "kmeans", seed=0, step_limit=1.0)
    assert float(loose.step_sizes().detach().max()) == pytest.approx(1e-6)  # already stable: left alone
