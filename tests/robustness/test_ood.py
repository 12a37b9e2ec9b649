"""OOD detection: the scores and FPR95 against independent computations, the OOD sets, and the files the
commands write."""

import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from conftest import QUICK, run_in_process
from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.robustness.ood import OOD_COLUMNS, SCORES, Mahalanobis, fpr_at_95, ood_inputs, ood_scores


def test_fpr95_is_the_false_positive_rate_where_the_roc_curve_keeps_95_percent_of_the_inliers():
    generator = torch.Generator().manual_seed(0)
    inside, outside = torch.randn(400, generator=generator), torch.randn(300, generator=generator) + 1.5
    # independently: scikit-learn's ROC with the in-distribution images as positives scored by -score
    labels = np.r_[np.ones(400), np.zeros(300)]
    fpr, tpr, _ = roc_curve(labels, -np.r_[inside.numpy(), outside.numpy()])
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert fpr_at_95(inside, outside) == pytest.approx(expected)
    assert fpr_at_95(inside, inside + 100) == 0.0 and fpr_at_95(inside + 100, inside) == 1.0


def test_fpr95_on_a_hand_counted_case():
    inside = torch.arange(20, dtype=torch.float64)  # keeps 19 of 20 (95%): threshold 18
    outside = torch.tensor([0.5, 18.0, 18.5, 30.0])  # 0.5 and 18 are kept: 2 of 4
    assert fpr_at_95(inside, outside) == 0.5


def test_mahalanobis_is_the_distance_to_the_nearest_class_mean_under_the_shared_covariance():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    mixing = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 0.7]])
    labels = rng.integers(0, 3, 600)
    features = means[labels] + rng.standard_normal((600, 3)) @ mixing
    score = Mahalanobis.fit(torch.as_tensor(features), torch.as_tensor(labels))
    # independently, in numpy: pooled covariance, its inverse, min over classes of the quadratic form
    centred = features - np.stack([features[labels == c].mean(0) for c in range(3)])[labels]
    precision = np.linalg.inv(centred.T @ centred / len(features))
    class_means = np.stack([features[labels == c].mean(0) for c in range(3)])
    queries = rng.standard_normal((50, 3)) * 3
    differences = queries[:, None, :] - class_means[None]
    expected = np.einsum("nkd,de,nke->nk", differences, precision, differences).min(1)
    np.testing.assert_allclose(score(torch.as_tensor(queries)).numpy(), expected, rtol=1e-5)


def test_mahalanobis_uses_the_classes_present_when_one_has_no_image():
    rng = np.random.default_rng(1)
    labels = rng.choice(
        [0, 2, 3], 200
    )  # class 1 of 0..3 has no image (a fast dev run's one batch can miss one)
    features = rng.standard_normal((200, 2)) + labels[:, None]
    score = Mahalanobis.fit(torch.as_tensor(features), torch.as_tensor(labels))
    class_means = np.stack([features[labels == c].mean(0) for c in (0, 2, 3)])
    centred = features - class_means[np.searchsorted([0, 2, 3], labels)]
    precision = np.linalg.inv(centred.T @ centred / len(features))
    queries = rng.standard_normal((20, 2)) * 2
    differences = queries[:, None, :] - class_means[None]
    expected = np.einsum("nkd,de,nke->nk", differences, precision, differences).min(1)
    np.testing.assert_allclose(score(torch.as_tensor(queries)).numpy(), expected, rtol=1e-5)


@pytest.fixture(scope="module")
def digits():
    datamodule = DigitsDataModule(split_seed=0)
    datamodule.setup()
    return datamodule


def test_ood_sets_are_seeded_shaped_like_the_inputs_and_what_they_claim(digits):
    test = digits.splits["test"].inputs
    noise = ood_inputs("uniform_noise", digits, "test", seed=3)
    assert noise.shape == test.shape and 0 <= noise.min() and noise.max() <= 1
    assert torch.equal(noise, ood_inputs("uniform_noise", digits, "test", seed=3))
    assert not torch.equal(noise, ood_inputs("uniform_noise", digits, "test", seed=4))
    other = ood_inputs("other_digits", digits, "test", seed=3)  # mnist5k's 28x28 images, resampled
    assert other.shape == test.shape and 0 <= other.min() and other.max() <= 1
    assert not any(torch.equal(o, t) for o, t in zip(other, test, strict=True))


def test_permuted_reorders_every_image_by_one_shared_permutation():
    # pixel i of image n holds the value 100 n + i: where each value lands names its source pixel
    images = (torch.arange(64.0) + 100 * torch.arange(5.0)[:, None]).view(5, 1, 8, 8)
    fake = SimpleNamespace(splits={"test": SimpleNamespace(inputs=images)})
    permuted = ood_inputs("permuted", fake, "test", seed=3).flatten(1)
    source = permuted - 100 * torch.arange(5.0)[:, None]
    assert torch.equal(source.sort(1).values[0], torch.arange(64.0))  # a permutation of the pixels
    assert (source == source[0]).all() and not torch.equal(source[0], torch.arange(64.0))


def test_held_out_classes_are_the_other_labels_of_the_same_split():
    full = DigitsDataModule(split_seed=0)
    full.setup()
    kept = DigitsDataModule(split_seed=0, classes=[3, 1, 7])
    kept.setup()
    assert kept.n_classes == 3
    for split in ("val", "test"):
        labels = full.splits[split].labels
        inside = torch.isin(labels, torch.tensor([3, 1, 7]))
        # the same images, in the same order: kept renumbered by their place in `classes`
        assert torch.equal(kept.splits[split].inputs, full.splits[split].inputs[inside])
        renumbered = torch.tensor([{3: 0, 1: 1, 7: 2}[int(label)] for label in labels[inside]])
        assert torch.equal(kept.splits[split].labels, renumbered)
        assert torch.equal(kept.held_out[split].inputs, full.splits[split].inputs[~inside])
        assert set(kept.held_out[split].labels.tolist()).isdisjoint({1, 3, 7})
    assert ood_inputs("held_out_classes", kept, "test", seed=0).shape[0] == int((~inside).sum())


def test_scores_are_higher_for_more_ood_by_their_definitions(digits):
    torch.manual_seed(0)
    net = DPNLitModule([1, 8, 8], 10, n_steps=2, n_components=4, feature_dim=6).eval().net
    train = digits.splits["train"]
    mahalanobis = Mahalanobis.fit(net.features(train.inputs).detach(), train.labels)
    images = digits.splits["test"].inputs[:20]
    scores = ood_scores(net, images, mahalanobis)
    assert list(scores) == list(SCORES)
    with torch.no_grad():
        states = net.states(images)
        logits = net.classifier(states[-1])
    torch.testing.assert_close(scores["msp"], -logits.softmax(1).max(1).values)
    torch.testing.assert_close(scores["energy"], -logits.double().logsumexp(1))
    torch.testing.assert_close(scores["phi_x0"], -net.potential.compute_potential(states[0]))
    torch.testing.assert_close(scores["phi_xT"], -net.potential.compute_potential(states[-1]))
    torch.testing.assert_close(scores["mahalanobis"], mahalanobis(states[0]))


def test_eval_writes_ood_files_for_every_set_and_score(trained_run, tmp_path):
    result = run_in_process(
        "dpn_lab.eval",
        f"ckpt_path={trained_run.best}",
        "robustness@eval=none",
        "eval.ood=[uniform_noise,permuted,other_digits]",
        f"hydra.run.dir={tmp_path / 'ood'}",
        cwd=trained_run.root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "ood" / "ood.csv").open()))
    assert tuple(rows[0]) == OOD_COLUMNS
    assert [(r["ood_set"], r["score"]) for r in rows] == [
        (s, score) for s in ("uniform_noise", "permuted", "other_digits") for score in SCORES
    ]
    assert all(0 <= float(r["auroc"]) <= 1 and 0 <= float(r["fpr95"]) <= 1 for r in rows)
    assert {r["n"] for r in rows} == {"360"}
    assert (tmp_path / "ood" / "ood.png").stat().st_size > 0
    assert "OOD detection (test set in distribution)" in result.stdout


def test_eval_refuses_held_out_classes_of_a_model_trained_on_every_label(trained_run, tmp_path):
    result = run_in_process(
        "dpn_lab.eval",
        f"ckpt_path={trained_run.best}",
        "robustness@eval=none",
        "eval.ood=[held_out_classes]",
        f"hydra.run.dir={tmp_path / 'ood'}",
        cwd=trained_run.root,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "error: DataError: eval.ood=held_out_classes is not possible here: it needs data.classes, the labels "
        "to train on (e.g. [0,1,2,3,4]); the rest are the OOD set"
    )


@pytest.mark.slow  # a training run (~6 s)
def test_train_on_some_classes_detects_the_others(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "trainer.max_epochs=1",
        *QUICK,
        "data.classes=[0,1,2,3,4]",
        "eval.ood=[held_out_classes]",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    rows = list(csv.DictReader((run_dir / "ood.csv").open()))
    assert [r["score"] for r in rows] == list(SCORES)
    # digits' 360 test images, about half of them labelled 5-9
    assert 150 <= int(rows[0]["n"]) <= 210 and int(rows[0]["n"]) + int(rows[0]["n_in"]) == 360
