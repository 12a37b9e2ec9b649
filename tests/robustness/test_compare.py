"""The sweep comparison: baselines fitted on the same test indices as the DPN jobs."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import run_in_process


@pytest.mark.slow
def test_comparison_fits_baselines_on_the_same_test_indices(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "experiment=robustness_digits",
        "recipe=robust_extractor",  # one recipe of the three
        "variant=ablation,dpn",
        "seed=0,1",
        "trainer.max_epochs=1",
        "eval.corruptions=[gaussian]",
        "eval.test_steps=null",
        "eval.attacks=[pgd_linf]",
        "eval.attack_eps.pgd_linf=[0.1]",
        "eval.attack_samples=30",
        "eval.attack_steps=3",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    runs = pd.read_csv(sweep / "runs.csv", dtype={"level": str, "recipe": str}, keep_default_na=False)
    assert list(dict.fromkeys(runs["variant"])) == ["ablation", "dpn", "logistic regression", "RBF SVC"]
    # every model was evaluated on the same two test sets (one per split seed)...
    splits = runs.groupby("variant")["split"].agg(lambda s: frozenset(s))
    assert len(set(splits)) == 1 and len(splits.iloc[0]) == 2
    # ...and they are the digests of the splits the jobs actually used
    from dpn_lab.data.digits import DigitsDataModule
    from dpn_lab.robustness.evaluate import index_digest

    for job in sweep.glob("[0-9]*"):
        meta = json.loads((job / "robustness.json").read_text())
        assert meta["data"]["name"] == "digits"
        dm = DigitsDataModule(split_seed=meta["data"]["args"]["split_seed"])
        dm.setup()
        assert meta["test_index_digest"] == index_digest(dm.split_indices["test"])
        # runs.csv holds each job's own numbers: its OOD AUROCs, its accuracy at each level
        mine = runs[runs["job"].astype(str) == job.name]
        for row in csv.DictReader((job / "ood.csv").open()):
            (value,) = mine[
                (mine["kind"] == row["ood_set"])
                & (mine["level"] == row["score"])
                & (mine["metric"] == "auroc")
            ]["value"]
            assert value == pytest.approx(float(row["auroc"]), rel=1e-7)  # runs.csv: 8 digits
        for row in meta["rows"]:
            (value,) = mine[
                (mine["kind"] == row["corruption"])
                & (mine["level"] == f"{row['severity']:g}")
                & (mine["metric"] == "accuracy")
            ]["value"]
            assert value == pytest.approx(row["accuracy"], rel=1e-7)
    # DPN minus its ablation, seed by seed: the paired differences recomputed from the per-job numbers
    paired = pd.read_csv(sweep / "paired.csv", dtype={"level": str}, keep_default_na=False)
    accuracy = paired[(paired["metric"] == "accuracy")]
    # five Gaussian levels, PGD at eps 0.1 and the masking check (the attack rows have no baselines)
    assert set(accuracy["kind"]) == {"gaussian", "pgd_linf", "pgd_linf masking check"} and len(accuracy) == 7
    assert set(paired["treatment"]) == {"dpn"} and set(paired["reference"]) == {"ablation"}
    for d in accuracy.to_dict("records"):
        at = runs[
            (runs["kind"] == d["kind"]) & (runs["level"] == d["level"]) & (runs["metric"] == "accuracy")
        ]
        by_seed = at.pivot_table(index="seed", columns="variant", values="value")
        differences = (by_seed["dpn"] - by_seed["ablation"]).to_numpy()
        assert d["diff"] == pytest.approx(differences.mean(), rel=1e-6, abs=1e-8)
        half = stats.t.ppf(0.975, 1) * differences.std(ddof=1) / np.sqrt(2)
        assert (d["ci_low"], d["ci_high"]) == pytest.approx(
            (differences.mean() - half, differences.mean() + half)
        )
    table = (sweep / "comparison.md").read_text()
    assert (
        "## Verdicts (primary endpoints)" in table
        and "| clean | 0 |" in table
        and "| gaussian | 0.4 |" in table
    )
    assert "Benjamini-Hochberg" in table and (sweep / "comparison_forest.png").is_file()
