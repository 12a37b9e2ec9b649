"""Corruptions against independent computations; robustness tables; the comparison's shared test sets."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from conftest import run_cli
from dpn_lab.corruption import CORRUPTIONS, corrupt
from dpn_lab.robustness import corrupted, robustness_rows

IMAGES = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_severity_zero_is_the_identity(kind):
    assert torch.equal(corrupt(IMAGES, kind, 0), IMAGES)


@pytest.mark.parametrize(
    "kind, severity", [("gaussian", 0.2), ("salt_pepper", 0.1), ("occlusion", 5), ("blur", 1.0)]
)
def test_corruptions_are_deterministic_given_a_seed_and_stay_in_range(kind, severity):
    a, b = corrupted(IMAGES, kind, severity, seed=3), corrupted(IMAGES, kind, severity, seed=3)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.equal(a, IMAGES)
    if kind != "blur":  # blur has no randomness
        assert not torch.equal(a, corrupted(IMAGES, kind, severity, seed=4))


def test_occlusion_blacks_out_one_square_of_the_given_side():
    images = torch.full((50, 1, 12, 12), 0.5)
    for side in (1, 4, 7):
        out = corrupt(images, "occlusion", side, torch.Generator().manual_seed(side))
        zeros = out == 0
        assert torch.equal(zeros.sum((1, 2, 3)), torch.full((50,), side * side))
        for mask in zeros[:, 0]:  # one contiguous square: its bounding box has exactly side x side pixels
            rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
            assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    with pytest.raises(ValueError, match="occlusion side 13 exceeds the 12x12 image"):
        corrupt(images, "occlusion", 13)


def test_blur_shrinks_white_noise_variance_by_the_kernel_energy():
    noise = torch.rand(20, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    sigma = 1.5
    radius = math.ceil(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    expected_ratio = (k**2).sum() ** 2  # separable 2-D kernel: variance factor (sum k^2)^2
    blurred = corrupt(noise, "blur", sigma)
    inner = (slice(None), slice(None), slice(radius, -radius), slice(radius, -radius))  # away from the edges
    ratio = blurred[inner].var() / noise[inner].var()
    assert ratio.item() == pytest.approx(expected_ratio, rel=0.05)
    assert blurred.mean().item() == pytest.approx(noise.mean().item(), abs=1e-3)


def test_robustness_rows_count_correct_predictions():
    labels = torch.arange(10) % 2

    def predict(inputs):  # "predicts" class 1 wherever the first pixel is bright
        return (inputs[:, 0, 0, 0] > 0.5).long(), 1.0, 2.0

    images = labels.float().view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    rows = robustness_rows(predict, images, labels, {"gaussian": [0.0], "occlusion": [4]}, seed=0)
    assert [(r["corruption"], r["severity"], r["accuracy"]) for r in rows] == [
        ("gaussian", 0.0, 1.0),
        ("occlusion", 4.0, 0.5),  # a 4x4 square covers the whole image: everything reads as class 0
    ]


@pytest.mark.slow
def test_eval_writes_every_corruption_and_level(tmp_path):
    trained = run_cli(
        "dpn_lab.train", "trainer.max_epochs=1", "logger=none", "robustness@eval=none", cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (ckpt,) = (tmp_path / "outputs" / "train" / "runs").glob("*/checkpoints/last.ckpt")
    result = run_cli("dpn_lab.eval", f"ckpt_path={ckpt}", "eval.levels.gaussian=[0,0.25]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "eval" / "runs").iterdir()
    with open(run / "robustness.csv") as f:
        rows = list(csv.DictReader(f))
    pairs = [(r["corruption"], float(r["severity"])) for r in rows]
    assert pairs == [("gaussian", 0.0), ("gaussian", 0.25)] + [
        (kind, float(level))
        for kind, levels in (
            ("salt_pepper", [0, 0.05, 0.1, 0.2, 0.3]),
            ("occlusion", [0, 2, 3, 4, 5]),
            ("blur", [0, 0.5, 1, 1.5, 2]),
        )
        for level in levels
    ]
    clean = [float(r["accuracy"]) for r in rows if float(r["severity"]) == 0]
    assert len(set(clean)) == 1  # severity 0 is the clean test set for every corruption
    assert "| corruption | severity | accuracy |" in (run / "robustness.md").read_text()
    assert (run / "robustness.png").stat().st_size > 10_000


@pytest.mark.slow
def test_comparison_fits_baselines_on_the_same_test_indices(tmp_path):
    result = run_cli(
        "dpn_lab.train",
        "experiment=robustness_digits",
        "seed=0,1",
        "trainer.max_epochs=1",
        "eval.corruptions=[gaussian]",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    models = list(dict.fromkeys(r["model"] for r in rows))
    assert models == ["model.n_steps=0 (no refinement)", "model.n_steps=5", "logistic regression", "RBF SVC"]
    assert all(r["n_seeds"] == "2" for r in rows)
    # every model was evaluated on the same two test sets (one per split seed)...
    test_sets = {r["test_sets"] for r in rows}
    assert len(test_sets) == 1 and len(next(iter(test_sets)).split()) == 2
    # ...and they are the digests of the splits the jobs actually used
    from dpn_lab.data import DigitsDataModule
    from dpn_lab.robustness import index_digest

    for job in sweep.glob("[0-9]*"):
        meta = json.loads((job / "robustness.json").read_text())
        dm = DigitsDataModule(split_seed=meta["data"]["split_seed"])
        dm.setup()
        assert meta["test_index_digest"] == index_digest(dm.split_indices["test"])
    table = (sweep / "comparison.md").read_text()
    assert "| gaussian | 0.4 |" in table and "± " in table
