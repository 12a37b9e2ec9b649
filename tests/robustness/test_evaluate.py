"""Robustness rows and the eval command's robustness files."""

import csv

import pytest
import torch

from conftest import run_cli
from dpn_lab.robustness.evaluate import robustness_rows


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
