"""Training in-process: a fast dev run of every data config, learning, the ablation."""

import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from conftest import write_cifar10_files, write_mnist_files
from dpn_lab.train import train

pytestmark = pytest.mark.slow  # each test takes more than ~2 s


@pytest.mark.parametrize(
    "data", ["digits", "mnist5k", "mnist", "fashion_mnist", "cifar10", "cifar10_synthetic", "blobs"]
)
def test_fast_dev_run_of_every_data_config(make_cfg, tmp_path, monkeypatch, data):
    overrides = [f"data={data}", "debug=fdr", "model.n_components=8", "model.init_samples=64"]
    if data in ("mnist", "fashion_mnist"):
        write_mnist_files(tmp_path / "data", {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[data])
    if data == "cifar10":
        import torchvision.datasets.cifar

        write_cifar10_files(tmp_path / "data")
        monkeypatch.setattr(
            torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path)
        )
    if data == "blobs":
        overrides.append("model.extractor=mlp")
    cfg = make_cfg(overrides)
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_the_cifar10_resnet_recipe_trains_on_cifar10_shaped_images_under_bf16_autocast(make_cfg):
    """experiment=cifar10_resnet (ResNet-18, crop + mirror on the device, SGD) with the synthetic images in
    place of CIFAR-10's files, one batch of each stage in bf16-mixed: the GPU check's run, on CPU."""
    cfg = make_cfg(
        [
            "experiment=cifar10_resnet",
            "data=cifar10_synthetic",
            "data.n_samples=400",
            "data.batch_size=16",
            "debug=fdr",
            "trainer.precision=bf16-mixed",
            "model.init_samples=64",
            "robustness@eval=none",  # evaluations and figures have tests of their own: here, training
            "~callbacks.figures",
        ]
    )
    assert (cfg.data.name, cfg.data.augment, cfg.model.extractor) == (
        "cifar10_synthetic",
        "crop_flip",
        "resnet18",
    )
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_default_run_learns_digits(make_cfg):
    cfg = make_cfg(["trainer.max_epochs=4", "logger=none"])
    metrics, best = train(cfg, Path(cfg.paths.output_dir))
    assert metrics["test/acc"] > 0.9
    assert Path(best).is_file() and (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()
    # k-means placed the centers on features at fit start: they moved from their N(0, 1) draw
    assert metrics["val/potential_gain"] > 0


def test_zero_steps_trains_the_ablation(make_cfg):
    cfg = make_cfg(["trainer.max_epochs=2", "logger=none", "model.n_steps=0"])
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    assert metrics["test/acc"] > 0.5 and metrics["test/potential_gain"] == 0


@pytest.mark.parametrize("precision", ["64-true", "bf16-mixed"])
def test_every_precision_allowed_on_cpu_trains(make_cfg, precision):
    cfg = make_cfg(
        ["debug=fdr", f"trainer.precision={precision}", "model.n_components=8", "model.init_samples=64"]
    )
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    assert 0.0 <= metrics["test/acc"] <= 1.0 and torch.isfinite(torch.tensor(metrics["test/loss"]))


def test_the_capacity_matched_control_trains_through_the_same_run(make_cfg):
    cfg = make_cfg(["model.refinement=residual_mlp", "trainer.max_epochs=2", "logger=none"])
    metrics, best = train(cfg, Path(cfg.paths.output_dir))
    assert metrics["test/acc"] > 0.5 and Path(best).is_file()
    state = torch.load(best, weights_only=True)
    assert (
        state["hyper_parameters"]["refinement"] == "residual_mlp"
        and state["hyper_parameters"]["n_steps"] == 5
    )
    assert any(key.startswith("net.residual.") for key in state["state_dict"])


def test_stage_two_fits_the_tweedie_denoiser_on_the_frozen_extractor_of_stage_one(make_cfg, tmp_path):
    """Stage 1 (the T=0 ablation), then recipe=frozen_denoiser variant=tweedie from its run directory: the
    extractor is stage 1's to the bit, the stage-1 files are untouched, the feature noise was measured, and the
    one step carries corrupted features toward the clean ones at the training severity."""
    common = ["trainer.max_epochs=2", "~callbacks.figures", "eval.figures=false", "logger=none"]
    stage_one = make_cfg(["variant=ablation", *common])
    with open_dict(stage_one):
        stage_one.paths.checkpoint_dir = str(tmp_path / "stage_one" / "checkpoints")
    train(stage_one, tmp_path / "stage_one")
    (best,) = (tmp_path / "stage_one" / "checkpoints").glob("epoch_*.ckpt")
    before = best.read_bytes()
    cfg = make_cfg(
        ["recipe=frozen_denoiser", "variant=tweedie", f"model.init_from={tmp_path / 'stage_one'}", *common]
    )
    with open_dict(cfg):
        cfg.paths.checkpoint_dir = str(tmp_path / "stage_two" / "checkpoints")
    train(cfg, tmp_path / "stage_two")
    assert best.read_bytes() == before
    first = torch.load(best, weights_only=True)["state_dict"]
    (second_file,) = (tmp_path / "stage_two" / "checkpoints").glob("epoch_*.ckpt")
    second = torch.load(second_file, weights_only=True)["state_dict"]
    extractor = [k for k in first if k.startswith("net.extractor.")]
    assert extractor and all(torch.equal(first[k], second[k]) for k in extractor)
    assert second["net.potential.noise_covariance"].diagonal().min() > 0
    rows = pd.read_csv(tmp_path / "stage_two" / "robustness.csv").set_index(["corruption", "severity"])
    assert rows.loc[("gaussian", 0.3), "denoising_ratio"] < 1
