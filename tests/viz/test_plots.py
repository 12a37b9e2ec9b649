"""Plots: the PCA they rest on."""

import numpy as np
import torch

from dpn_lab.viz.plots import pca_plane, project


def test_pca_plane_matches_numpy():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(300, 5)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1])
    mean, basis, explained = pca_plane(torch.from_numpy(data))
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(data.T))
    top = eigenvectors[:, ::-1][:, :2].T
    np.testing.assert_allclose(np.abs(basis.numpy()), np.abs(top), atol=1e-8)
    np.testing.assert_allclose(explained.numpy(), eigenvalues[::-1][:2] / eigenvalues.sum(), rtol=1e-8)
    coords = project(torch.from_numpy(data), mean, basis)
    np.testing.assert_allclose(coords.var(0, ddof=1), eigenvalues[::-1][:2], rtol=1e-8)
