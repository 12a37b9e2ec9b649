"""The sweep comparison: baselines fitted on the same test indices as the DPN jobs."""

import csv
import json

import pytest

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
        "~callbacks.figures",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    with open(sweep / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    models = list(dict.fromkeys(r["model"] for r in rows))
    assert models == ["variant=ablation", "variant=dpn", "logistic regression", "RBF SVC"]
    assert all(r["n_seeds"] == "2" for r in rows)
    # every model was evaluated on the same two test sets (one per split seed)...
    test_sets = {r["test_sets"] for r in rows}
    assert len(test_sets) == 1 and len(next(iter(test_sets)).split()) == 2
    # ...and they are the digests of the splits the jobs actually used
    from dpn_lab.data.digits import DigitsDataModule
    from dpn_lab.robustness.evaluate import index_digest

    for job in sweep.glob("[0-9]*"):
        meta = json.loads((job / "robustness.json").read_text())
        assert meta["data"]["name"] == "digits"
        dm = DigitsDataModule(split_seed=meta["data"]["args"]["split_seed"])
        dm.setup()
        assert meta["test_index_digest"] == index_digest(dm.split_indices["test"])
    table = (sweep / "comparison.md").read_text()
    assert "| gaussian | 0.4 |" in table and "± " in table
    # DPN minus its matched ablation, marked where it exceeds 2 std
    with open(sweep / "comparison_vs_ablation.csv") as f:
        differences = list(csv.DictReader(f))
    # five Gaussian levels, PGD at eps 0.1 and the masking check (the attack rows have no baselines)
    assert {d["model"] for d in differences} == {"variant=dpn"} and len(differences) == 7
    assert {d["corruption"] for d in differences} == {"gaussian", "pgd_linf", "pgd_linf masking check"}
    cell = {(r["model"], r["corruption"], r["severity"]): r for r in rows}
    for d in differences:
        dpn, ablation = (
            cell[("variant=dpn", d["corruption"], d["severity"])],
            cell[("variant=ablation", d["corruption"], d["severity"])],
        )
        difference = float(dpn["accuracy"]) - float(ablation["accuracy"])
        assert float(d["accuracy_diff"]) == pytest.approx(difference)
        spread = 2 * max(float(dpn["accuracy_std"]), float(ablation["accuracy_std"]))
        assert d["accuracy_significant"] == str(abs(difference) > spread)
    assert "DPN minus its matched ablation" in table
    # the OOD sets of robustness_digits, per model, set and score, and the DPN minus its ablation
    with open(sweep / "ood_comparison.csv") as f:
        ood = list(csv.DictReader(f))
    assert [(r["model"], r["ood_set"]) for r in ood[::5]] == [
        (model, ood_set)
        for model in ("variant=ablation", "variant=dpn")
        for ood_set in ("uniform_noise", "permuted", "other_digits")
    ]
    assert all(r["n_seeds"] == "2" for r in ood)
    per_job = [
        {(r["ood_set"], r["score"]): float(r["auroc"]) for r in csv.DictReader((job / "ood.csv").open())}
        for job in sorted(sweep.glob("[0-9]*"))
        if "variant=dpn" in (job / ".hydra" / "overrides.yaml").read_text()
    ]
    dpn_mean = {
        r["score"]: float(r["auroc"])
        for r in ood
        if r["model"] == "variant=dpn" and r["ood_set"] == "permuted"
    }
    for score, mean in dpn_mean.items():
        assert mean == pytest.approx(sum(job[("permuted", score)] for job in per_job) / len(per_job))
    with open(sweep / "ood_vs_ablation.csv") as f:
        ood_differences = list(csv.DictReader(f))
    assert len(ood_differences) == 15
    cell = {(r["model"], r["ood_set"], r["score"]): float(r["auroc"]) for r in ood}
    for d in ood_differences:
        expected = (
            cell[("variant=dpn", d["ood_set"], d["score"])]
            - cell[("variant=ablation", d["ood_set"], d["score"])]
        )
        assert float(d["auroc_diff"]) == pytest.approx(expected)
