"""The positive control of the frozen-denoiser comparison: a case where the refinement must help by
construction, measured with the comparison's own paired statistics. If it does not find the gain, the
pipeline (fit, noise estimate, Tweedie step, read-out, statistics) is broken.

Features are drawn from a known Gaussian mixture in R^D (classes own two components each) and observed with
Gaussian noise of known scale s, so the noisy-feature density is a mixture the EM fit can recover and
Tweedie's step is the Bayes denoiser. Per seed (data, fit and noise all drawn from it), with the same code as a
stage-2 run (`initialize_potential` by EM, `feature_noise` from clean/noisy training pairs,
`convolve_with_noise`, one step of a `step=noise_model` potential):
  reference  a logistic read-out fitted on the clean and noisy training features (the refit ablation),
  treatment  the same read-out fitted on the refined clean and noisy features, tested on refined ones,
both tested on noisy test features. The paired difference of test accuracy over seeds is summarised by
`dpn_lab.robustness.paired.paired_summary`, with the per-seed denoising ratio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression

from dpn_lab.model.mixture_init import convolve_with_noise, feature_noise, initialize_potential
from dpn_lab.model.options import PotentialConfig
from dpn_lab.model.potential import DenoisingPotential
from dpn_lab.robustness.paired import paired_summary

DIM, CLASSES, PER_CLASS = 8, 3, 2


def one_seed(seed: int, noise_scale: float, n_train: int, n_test: int) -> dict[str, float]:
    """Accuracies of the reference and the treatment, and the denoising ratio, for one seed."""
    rng = np.random.default_rng(seed)
    n_components = CLASSES * PER_CLASS
    means = rng.normal(scale=2.0, size=(n_components, DIM))
    factors = rng.normal(scale=0.5, size=(n_components, DIM, DIM)) / np.sqrt(DIM)
    covariances = factors @ factors.transpose(0, 2, 1) + 0.05 * np.eye(DIM)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        component = rng.integers(n_components, size=n)
        clean = means[component] + np.einsum(
            "nij,nj->ni", np.linalg.cholesky(covariances)[component], rng.normal(size=(n, DIM))
        )
        return clean, clean + noise_scale * rng.normal(size=(n, DIM)), component // PER_CLASS

    train_clean, train_noisy, train_labels = draw(n_train)
    _, test_noisy, test_labels = draw(n_test)
    config = PotentialConfig(DIM, n_components, n_steps=1, covariance="full", step="noise_model")
    potential = DenoisingPotential(config).double()
    initialize_potential(potential, torch.as_tensor(train_clean), "gmm", seed, None)
    convolve_with_noise(
        potential, *feature_noise(torch.as_tensor(train_clean), torch.as_tensor(train_noisy), "full")
    )

    def refine(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return potential(torch.as_tensor(x)).numpy()

    def accuracy(train_features: np.ndarray, test_features: np.ndarray) -> float:
        readout = LogisticRegression(max_iter=2000).fit(train_features, np.tile(train_labels, 2))
        return float(readout.score(test_features, test_labels))

    reference = accuracy(np.vstack([train_clean, train_noisy]), test_noisy)
    treatment = accuracy(np.vstack([refine(train_clean), refine(train_noisy)]), refine(test_noisy))
    denoised = refine(train_noisy)
    ratio = np.sqrt(
        ((denoised - train_clean) ** 2).sum(1).mean() / ((train_noisy - train_clean) ** 2).sum(1).mean()
    )
    return {"seed": seed, "reference": reference, "treatment": treatment, "denoising_ratio": float(ratio)}


def positive_control(
    seeds: int = 5, noise_scale: float = 1.5, n_train: int = 2000, n_test: int = 2000
) -> tuple[pd.DataFrame, dict[str, float]]:
    """(per-seed table, paired summary of treatment - reference accuracy)."""
    per_seed = pd.DataFrame([one_seed(s, noise_scale, n_train, n_test) for s in range(seeds)])
    return per_seed, paired_summary((per_seed["treatment"] - per_seed["reference"]).to_numpy())
