"""Plots: the PCA they rest on, and what the prototype montage shows."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dpn_lab.viz.plots import pca_plane, project, prototype_grid


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


@pytest.mark.parametrize("channels", [1, 3])
def test_prototype_montage_holds_the_nearest_images_of_the_heaviest_centers_in_order(channels):
    rng = np.random.default_rng(0)
    n, height, width = 50, 3, 4
    images = torch.from_numpy(rng.random((n, channels, height, width)))
    features = torch.from_numpy(rng.normal(size=(n, 6)))
    centers = torch.from_numpy(rng.normal(size=(5, 6)))
    weights = torch.tensor([0.1, 0.4, 0.05, 0.3, 0.15])
    figure = prototype_grid(images, features, centers, weights, per_center=3, max_centers=4)
    (ax,) = figure.axes
    montage = np.asarray(ax.images[0].get_array())  # H x W (gray) or H x W x 3
    assert montage.shape[:2] == (4 * (height + 1) + 1, 3 * (width + 1) + 1)
    assert [t.get_text().split()[1] for t in ax.get_yticklabels()] == ["1", "3", "4", "0"]
    for row, center in enumerate([1, 3, 4, 0]):
        distances = np.linalg.norm(features.numpy() - centers[center].numpy(), axis=1)
        for col, index in enumerate(np.argsort(distances)[:3]):
            top, left = 1 + row * (height + 1), 1 + col * (width + 1)
            cell = montage[top : top + height, left : left + width]
            expected = images[index].permute(1, 2, 0).numpy()  # H x W x C
            np.testing.assert_allclose(cell, expected[..., 0] if channels == 1 else expected, rtol=1e-6)
    plt.close(figure)
