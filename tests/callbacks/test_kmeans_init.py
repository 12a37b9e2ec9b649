"""KMeansInit: runs once, after its warm-up."""

import pytest
import torch

pytestmark = pytest.mark.slow  # each test takes more than ~2 s


@pytest.mark.parametrize("after_epochs", [0, 2])
def test_kmeans_init_runs_once_after_its_warm_up(make_cfg, after_epochs):
    from pathlib import Path

    from dpn_lab.callbacks.figure_logger import FigureLogger
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
    gain = dict(FigureLogger.history_in(history)["val/potential_gain"])  # as dpn_lab.analyze reads it
    if after_epochs:
        # refinement is off during the warm-up: phi(x_T) = phi(x_0)
        assert gain[0] == 0 and gain[1] == 0 and gain[2] != 0
    else:
        assert all(value != 0 for value in gain.values())
