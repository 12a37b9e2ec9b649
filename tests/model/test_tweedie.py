"""Tweedie's step: one DPN step on the noise-convolved mixture is the posterior mean of the clean features,
checked against the closed form computed independently with numpy/scipy."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import multivariate_normal

from dpn_lab.errors import ConfigError
from dpn_lab.model.mixture_init import convolve_with_noise, feature_noise
from dpn_lab.model.options import PotentialConfig
from dpn_lab.model.potential import DenoisingPotential

D, K = 4, 3


def mixture(kind: str, rng: np.random.Generator):
    pi = rng.dirichlet(np.ones(K) * 3)
    mu = rng.normal(scale=3.0, size=(K, D))
    if kind == "diag":
        S = np.stack([np.diag(rng.uniform(0.2, 2.0, D)) for _ in range(K)])
    else:
        M = rng.normal(size=(K, D, D))
        S = M @ M.transpose(0, 2, 1) / D + 0.1 * np.eye(D)
    return pi, mu, S


def noise(kind: str, rng: np.random.Generator):
    if kind == "isotropic":
        return np.zeros(D), 0.7 * np.eye(D)
    M = rng.normal(size=(D, D))
    return rng.normal(scale=0.5, size=D), M @ M.T / D + 0.05 * np.eye(D)


def tweedie_potential(pi, mu, S, b, N, gradient_impl="closed_form") -> DenoisingPotential:
    config = PotentialConfig(
        D, K, n_steps=1, covariance="full", step="noise_model", gradient_impl=gradient_impl
    )
    potential = DenoisingPotential(config).double()
    P = np.linalg.inv(S)
    with torch.no_grad():
        potential.mu.copy_(torch.as_tensor(mu))
        potential.precision_factor.copy_(torch.as_tensor(np.linalg.cholesky(P).transpose(0, 2, 1)))
        potential.c.copy_(torch.as_tensor(np.log(pi) + 0.5 * np.linalg.slogdet(P)[1]))
    convolve_with_noise(potential, torch.as_tensor(b), torch.as_tensor(N))
    return potential


def posterior(y, pi, mu, S, b, N):
    """E[x | y] and tr Cov[x | y] for x ~ sum_i pi_i N(mu_i, S_i), y = x + n, n ~ N(b, N), by Bayes' rule."""
    z = y - b
    log_r = np.stack(
        [np.log(pi[i]) + multivariate_normal(mu[i], S[i] + N).logpdf(z) for i in range(K)], axis=-1
    )
    r = softmax(log_r.reshape(len(y), K), axis=1)
    gains = [S[i] @ np.linalg.inv(S[i] + N) for i in range(K)]
    means = np.stack([mu[i] + (z - mu[i]) @ gains[i].T for i in range(K)], axis=1)  # B x K x D
    mean = (r[..., None] * means).sum(1)
    spread = np.array([np.trace(S[i] - gains[i] @ S[i]) for i in range(K)])
    second = (r * (spread + (means**2).sum(-1))).sum(1)
    return mean, second - (mean**2).sum(1)


@pytest.mark.parametrize("gradient_impl", ["closed_form", "autograd"])
@pytest.mark.parametrize("noise_kind", ["isotropic", "full"])
@pytest.mark.parametrize("prior", ["diag", "full"])
def test_one_step_is_the_posterior_mean(prior, noise_kind, gradient_impl):
    rng = np.random.default_rng(["diag", "full"].index(prior) * 2 + ["isotropic", "full"].index(noise_kind))
    pi, mu, S = mixture(prior, rng)
    b, N = noise(noise_kind, rng)
    y = mu[rng.integers(K, size=64)] + rng.normal(scale=2.0, size=(64, D))
    potential = tweedie_potential(pi, mu, S, b, N, gradient_impl)
    states = potential.refine(torch.as_tensor(y))
    expected, _ = posterior(y, pi, mu, S, b, N)
    assert len(states) == 2
    np.testing.assert_allclose(states[1].detach().numpy(), expected, rtol=0, atol=1e-10)


def test_the_step_reaches_the_bayes_risk_and_beats_the_noisy_features():
    rng = np.random.default_rng(7)
    pi, mu, S = mixture("full", rng)
    b, N = noise("full", rng)
    n = 20_000
    component = rng.choice(K, size=n, p=pi)
    x = mu[component] + np.einsum("nij,nj->ni", np.linalg.cholesky(S)[component], rng.normal(size=(n, D)))
    y = x + rng.multivariate_normal(b, N, size=n)
    denoised = tweedie_potential(pi, mu, S, b, N)(torch.as_tensor(y)).detach().numpy()
    mse = ((denoised - x) ** 2).sum(1)
    _, posterior_variance = posterior(y, pi, mu, S, b, N)
    bayes_risk, standard_error = posterior_variance.mean(), mse.std() / np.sqrt(n)
    assert abs(mse.mean() - bayes_risk) < 3 * standard_error, (mse.mean(), bayes_risk, standard_error)
    assert mse.mean() < 0.8 * ((y - b - x) ** 2).sum(1).mean()
    assert mse.mean() < ((y - x) ** 2).sum(1).mean()


def test_the_noise_estimate_is_the_mean_and_covariance_of_the_differences():
    rng = np.random.default_rng(3)
    clean = rng.normal(size=(500, D))
    diff = rng.multivariate_normal(np.arange(D) * 0.1, np.diag([1.0, 2.0, 0.5, 0.3]), size=500)
    shift, cov = feature_noise(torch.as_tensor(clean), torch.as_tensor(clean + diff), "full")
    np.testing.assert_allclose(shift.numpy(), diff.mean(0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(diff.T), atol=1e-12)
    shift, cov = feature_noise(torch.as_tensor(clean), torch.as_tensor(clean + diff), "isotropic")
    assert shift.abs().max() == 0
    np.testing.assert_allclose(cov.numpy(), np.eye(D) * np.trace(np.cov(diff.T)) / D, atol=1e-12)


def test_a_singular_noise_estimate_is_refused_by_name():
    clean = torch.randn(3, D, dtype=torch.float64)  # 3 pairs in 4 dimensions: rank 2 at most
    with pytest.raises(ConfigError, match=r"^model.noise_pairs: the feature noise covariance .* is singular"):
        feature_noise(clean, clean + torch.randn(3, D, dtype=torch.float64), "full")
