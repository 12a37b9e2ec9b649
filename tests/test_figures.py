"""Figures: the PCA they rest on, and PNG files that exist, decode and show something."""

import matplotlib.image
import numpy as np
import pytest
import torch

from dpn_lab import DenoisingPotential, FullArchitecture, build_extractor
from dpn_lab.figure_report import write_figures
from dpn_lab.figures import pca_plane, project


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


def assert_png_shows_something(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    # a blank canvas is one colour; a figure has ink and structure
    assert image[..., :3].std() > 0.05
    assert (image[..., :3].mean(-1) < 0.5).mean() > 0.001


def small_model(input_shape, n_steps=3):
    torch.manual_seed(0)
    potential = DenoisingPotential(8, 4, n_steps=n_steps)
    extractor = "cnn" if len(input_shape) == 3 else "mlp"
    return FullArchitecture(build_extractor(extractor, input_shape, 8), potential, n_classes=3)


def test_every_figure_is_written_for_images(tmp_path):
    model = small_model((1, 8, 8))
    images, labels = torch.rand(90, 1, 8, 8), torch.arange(90) % 3
    history = {"train/loss": [(0, 1.0), (1, 0.5)], "val/acc": [(0, 0.4), (1, 0.7)]}
    written = write_figures(model, images, labels, 3, history, tmp_path, "final", n_paths=10)
    assert set(written) == {"prototypes", "feature_map", "trajectories", "covariance", "training_curves"}
    for path in written.values():
        assert path.parent == tmp_path and path.name.endswith("_final.png")
        assert_png_shows_something(path)
    assert model.training  # the model's mode is restored


def test_flat_inputs_have_no_prototypes_and_no_steps_no_paths(tmp_path):
    model = small_model((6,), n_steps=0)
    written = write_figures(model, torch.randn(50, 6), torch.arange(50) % 3, 3, None, tmp_path, "t")
    assert set(written) == {"feature_map", "covariance"}


@pytest.mark.parametrize("after_epochs", [0, 2])
def test_kmeans_init_runs_once_after_its_warm_up(make_cfg, after_epochs):
    from pathlib import Path

    from dpn_lab.train import train

    cfg = make_cfg(
        [
            "trainer.max_epochs=3",
            "logger=none",
            f"callbacks.kmeans_init.after_epochs={after_epochs}",
            "callbacks.figures.every_n_epochs=0",
        ]
    )
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    history = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    state = next(v for k, v in history["callbacks"].items() if k.startswith("KMeansInit"))
    assert state == {"done": True}
    gains = dict(
        next(v for k, v in history["callbacks"].items() if k.startswith("FigureLogger"))["history"].items()
    )
    gain = dict(map(tuple, gains["val/potential_gain"]))
    if after_epochs:
        # refinement is off during the warm-up: phi(x_T) = phi(x_0)
        assert gain[0] == 0 and gain[1] == 0 and gain[2] != 0
    else:
        assert all(value != 0 for value in gain.values())
