"""report_evaluations: after a fast dev run, every evaluation runs on one batch; eval.figures=false writes the
tables only."""

import csv
import json
from pathlib import Path

import pytest

from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.robustness.evaluate import index_digest
from dpn_lab.train import train


@pytest.mark.slow  # trains
def test_a_fast_dev_run_evaluates_one_batch_of_each_split(make_cfg):
    cfg = make_cfg(
        [
            "debug=fdr",
            "data.batch_size=32",
            "eval.corruptions=[gaussian]",
            "eval.attacks=[pgd_linf]",  # eval.attack_samples stays 360: more than one batch
            "eval.attack_eps.pgd_linf=[0.1]",
            "eval.attack_steps=2",
            "eval.ood=[uniform_noise]",
            "~callbacks.figures",
            "eval.figures=false",
        ]
    )
    run = Path(cfg.paths.output_dir)
    run.mkdir()  # as Hydra makes it for a command
    train(cfg, run)

    def rows(name: str) -> list[dict]:
        with open(run / name) as f:
            return list(csv.DictReader(f))

    assert {row["n"] for row in rows("robustness.csv")} == {"32"}
    assert {row["n"] for row in rows("adversarial.csv")} == {"32"}
    assert {(row["n"], row["n_in"]) for row in rows("ood.csv")} == {("32", "32")}
    assert not list(run.rglob("*.png"))  # eval.figures=false
    # the digest names the 32 test images it used, so a sweep comparison will not take them for the full split
    digits = DigitsDataModule()
    digits.setup()
    recorded = json.loads((run / "robustness.json").read_text())["test_index_digest"]
    assert recorded == index_digest(digits.split_indices["test"][:32])
