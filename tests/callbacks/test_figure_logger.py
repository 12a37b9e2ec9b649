"""FigureLogger: the samples its figures are drawn from, in a normal run and in a fast dev run."""

from pathlib import Path

import pytest

import dpn_lab.callbacks.figure_logger as figure_logger
from dpn_lab.train import train
from dpn_lab.viz.plots import FIGURE_KINDS

pytestmark = pytest.mark.slow  # each test trains (more than ~2 s)


@pytest.mark.parametrize(
    "overrides, n_drawn",
    [
        # limited batches, not a fast dev run: n_samples of the 1,077 training images
        (["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"], 50),
        # debug=fdr is one batch of everything: the figures' samples are one batch of 32
        (["debug=fdr"], 32),
    ],
    ids=["n_samples", "fast_dev_run"],
)
def test_final_figures_are_drawn_from_n_samples_or_one_batch_in_a_fast_dev_run(
    make_cfg, monkeypatch, overrides, n_drawn
):
    drawn, write_figures = [], figure_logger.write_figures

    def spy(net, inputs, labels, *args, **kwargs):
        drawn.append((len(inputs), len(labels)))
        return write_figures(net, inputs, labels, *args, **kwargs)

    monkeypatch.setattr(figure_logger, "write_figures", spy)
    cfg = make_cfg(
        [
            *overrides,
            "logger=none",
            "robustness@eval=none",
            "data.batch_size=32",
            "callbacks.figures.n_samples=50",
        ]
    )
    train(cfg, Path(cfg.paths.output_dir))
    assert drawn == [(n_drawn, n_drawn)]
    figures = Path(cfg.paths.output_dir) / "figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"{kind}_final.png" for kind in FIGURE_KINDS)
