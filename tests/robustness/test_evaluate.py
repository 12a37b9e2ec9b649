"""Robustness rows and the eval command's robustness files."""

import csv

import numpy as np
import pytest
import torch

from conftest import run_in_process
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.robustness.evaluate import accuracy_at_coverage, auroc, corrupted, robustness_rows, steps_rows


def test_robustness_rows_count_correct_predictions():
    labels = torch.arange(10) % 2

    def predict(inputs):  # "predicts" class 1 wherever the first pixel is bright
        return {"predicted": (inputs[:, 0, 0, 0] > 0.5).long()}

    images = labels.float().view(10, 1, 1, 1).expand(10, 1, 4, 4).contiguous()
    rows = robustness_rows(predict, images, labels, {"gaussian": [0.0], "occlusion": [4]}, seed=0)
    assert [(r["corruption"], r["severity"], r["accuracy"]) for r in rows] == [
        ("gaussian", 0.0, 1.0),
        ("occlusion", 4.0, 0.5),  # a 4x4 square covers the whole image: everything reads as class 0
    ]


def test_auroc_is_the_probability_a_corrupted_input_scores_higher():
    clean, corrupted = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0])
    # pairs (corrupted > clean): 1 vs {0: win, 1: tie, 2: loss} = 1.5; 3 vs all = 3; out of 6
    assert auroc(clean, corrupted) == pytest.approx(4.5 / 6)
    assert auroc(clean, clean + 10) == 1.0 and auroc(clean + 10, clean) == 0.0
    sk = pytest.importorskip("sklearn.metrics")
    scores = torch.randn(200, generator=torch.Generator().manual_seed(0))
    expected = sk.roc_auc_score([0] * 120 + [1] * 80, scores.numpy())
    assert auroc(scores[:120], scores[120:]) == pytest.approx(expected)


def test_accuracy_at_coverage_rejects_the_least_confident():
    correct = torch.tensor([True, False, True, True, False, True, True, True, True, True])
    confidence = torch.tensor([0.9, 0.1, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.95])
    # 90% coverage keeps 9 of 10: drops index 1 (confidence 0.1), one wrong answer left of 9
    assert accuracy_at_coverage(correct, confidence) == pytest.approx(8 / 9)
    assert accuracy_at_coverage(correct, confidence, coverage=0.3) == 1.0


def test_uncertainty_columns_of_a_dpn_on_noise():
    torch.manual_seed(0)
    model = DPNLitModule([1, 8, 8], 3, n_steps=2, n_components=3, feature_dim=4).eval()
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(40) % 3
    from dpn_lab.robustness.evaluate import dpn_outputs

    rows = robustness_rows(
        lambda x: dpn_outputs(model.net, x), images, labels, {"gaussian": [0.0, 0.5]}, seed=1
    )
    assert rows[0]["auroc_potential"] != rows[0]["auroc_potential"]  # NaN: clean against clean
    for key in ("auroc_potential", "auroc_msp", "acc90_potential", "acc90_msp"):
        assert 0 <= rows[1][key] <= 1, key
    steps = steps_rows(model.net, images, labels, {"gaussian": [0.0]}, 1, [0, 2, 7])
    assert [r["test_steps"] for r in steps] == [0, 2, 7] and model.net.potential.n_steps == 2
    with torch.no_grad():
        plain = (model.net.classifier(model.net.features(images)).argmax(1) == labels).float().mean()
    assert steps[0]["accuracy"] == pytest.approx(float(plain))  # T=0: the read-out of x_0
    assert steps[1]["accuracy"] == rows[0]["accuracy"]  # T=2: the trained number of steps
    noisy = corrupted(images, "gaussian", 0.5, 1)
    with torch.no_grad():
        clean_x0, noisy_x0 = model.net.features(images).numpy(), model.net.features(noisy).numpy()
        noisy_xT = model.net.potential(model.net.features(noisy)).numpy()
    expected = np.sqrt(
        ((noisy_xT - clean_x0) ** 2).sum(1).mean() / ((noisy_x0 - clean_x0) ** 2).sum(1).mean()
    )
    assert rows[1]["denoising_ratio"] == pytest.approx(expected, rel=1e-5)
    assert rows[0]["denoising_ratio"] != rows[0]["denoising_ratio"]  # NaN: nothing to denoise


@pytest.mark.slow
def test_eval_writes_every_corruption_and_level(trained_run, tmp_path):
    result = run_in_process(
        "dpn_lab.eval",
        f"ckpt_path={trained_run.last}",
        "eval.levels.gaussian=[0,0.25]",
        "eval.test_steps=[0,5,10]",
        cwd=tmp_path,
    )
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
    assert (run / "reliability.png").stat().st_size > 10_000  # clean and gaussian 0.25
    assert all(
        0 <= float(r["ece"]) <= 1 and float(r["nll"]) > 0 and 0 <= float(r["brier"]) <= 2 for r in rows
    )
    assert (run / "uncertainty.png").stat().st_size > 10_000 and (
        run / "test_steps.png"
    ).stat().st_size > 10_000
    with open(run / "test_steps.csv") as f:
        steps = list(csv.DictReader(f))
    assert [int(r["test_steps"]) for r in steps] == [0] * 17 + [5] * 17 + [10] * 17
    trained_steps = [r for r in steps if r["test_steps"] == "5"]  # the default model trains T=5
    assert [float(r["accuracy"]) for r in trained_steps] == [float(r["accuracy"]) for r in rows]
    noisy = next(r for r in rows if r["corruption"] == "gaussian" and r["severity"] == "0.25")
    assert 0 <= float(noisy["auroc_potential"]) <= 1 and 0 <= float(noisy["acc90_msp"]) <= 1


def test_calibration_matches_its_definitions():
    from dpn_lab.robustness.evaluate import CALIBRATION_BINS, calibration

    torch.manual_seed(0)
    logits, labels = 3 * torch.randn(500, 10), torch.randint(0, 10, (500,))
    found = calibration(logits, labels)
    p = logits.double().softmax(1).numpy()
    y = labels.numpy()
    confidence, predicted = p.max(1), p.argmax(1)
    ece = 0.0
    for low in range(CALIBRATION_BINS):  # equal-width bins (low/15, (low+1)/15] of the top label's confidence
        inside = (confidence > low / CALIBRATION_BINS) & (confidence <= (low + 1) / CALIBRATION_BINS)
        if inside.any():
            ece += inside.mean() * abs((predicted[inside] == y[inside]).mean() - confidence[inside].mean())
    assert found["ece"] == pytest.approx(ece, abs=1e-6)
    assert found["nll"] == pytest.approx(-np.log(p[np.arange(500), y]).mean(), rel=1e-9)
    onehot = np.eye(10)[y]
    assert found["brier"] == pytest.approx(((p - onehot) ** 2).sum(1).mean(), rel=1e-9)


def test_auroc_of_ten_thousand_scores_sorts_instead_of_comparing_every_pair():
    import time

    scores = torch.rand(20_000)
    start = time.perf_counter()
    value = auroc(scores[:10_000], scores[10_000:] + 0.1)
    assert (
        time.perf_counter() - start < 1.0 and 0.5 < value < 1.0
    )  # the N x N version took seconds and 800 MB
