"""The figure report: PNG files that exist, decode and show something."""

import matplotlib.image
import pytest
import torch

from dpn_lab.model.extractors import build_extractor
from dpn_lab.model.network import DPNClassifier
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig
from dpn_lab.viz.report import write_figures


@pytest.mark.slow
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


def assert_png_shows_something(path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    # a blank canvas is one colour; a figure has ink and structure
    assert image[..., :3].std() > 0.05
    assert (image[..., :3].mean(-1) < 0.5).mean() > 0.001


def small_model(input_shape, n_steps=3):
    torch.manual_seed(0)
    potential = DenoisingPotential(PotentialConfig(8, 4, n_steps=n_steps, covariance="full"))
    extractor = "cnn" if len(input_shape) == 3 else "mlp"
    return DPNClassifier(build_extractor(extractor, input_shape, 8), potential, n_classes=3)


def test_one_dimensional_features_are_drawn_on_a_line(tmp_path):
    torch.manual_seed(0)
    potential = DenoisingPotential(PotentialConfig(1, 4, n_steps=3, covariance="diag"))
    model = DPNClassifier(build_extractor("cnn", (1, 8, 8), 1), potential, 3)
    written = write_figures(model, torch.rand(90, 1, 8, 8), torch.arange(90) % 3, 3, None, tmp_path, "t", 10)
    assert set(written) == {"prototypes", "feature_map", "trajectories", "covariance"}
    for path in written.values():
        assert_png_shows_something(path)
