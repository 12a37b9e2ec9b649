"""Committed results reproduce: the README's results tables are what results/ renders, a recorded sweep
round-trips into results files, and each result's sentinel job, rerun on this tree, gets the test accuracy
it recorded (to one test image). A change that moves training numerics fails here until the results are
measured again (`make robustness`)."""

import csv
import json
from pathlib import Path

import pytest

from conftest import ROOT
from dpn_lab.robustness.results import read_rows, recipe_table, render_readme, scores_table

RESULTS = sorted(p.parent for p in (ROOT / "results").glob("*/provenance.json"))


def test_the_readme_tables_are_rendered_from_the_committed_results():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- results:" in readme
    assert render_readme(readme, ROOT / "results") == readme, "run: python -m dpn_lab.results render"


@pytest.mark.parametrize("result", RESULTS, ids=[r.name for r in RESULTS])
def test_a_result_records_its_commit_command_and_sentinel(result):
    provenance = json.loads((result / "provenance.json").read_text())
    assert len(provenance["commit"]) == 40 and provenance["command"] and provenance["sentinel"]
    jobs = list(csv.DictReader((result / "jobs.csv").open()))
    assert jobs and all(job["status"] == "ok" for job in jobs)


def test_the_recipe_table_puts_ablation_dpn_and_a_marked_difference_side_by_side():
    def row(model, accuracy, std):
        return {
            "model": model,
            "corruption": "gaussian",
            "severity": 0.1,
            "accuracy": accuracy,
            "accuracy_std": std,
            **{f"{m}{s}": float("nan") for m in ("auroc_potential", "acc90_potential") for s in ("", "_std")},
        }

    summary = [
        row("recipe=a model.n_steps=0 (no refinement)", 0.80, 0.01),
        row("recipe=a model.n_steps=5", 0.90, 0.02),
        row("RBF SVC", 0.85, 0.0),
    ]
    table = recipe_table(summary, "accuracy", baselines=True).splitlines()
    assert table[0] == "| corruption | severity | (a) a: ablation / DPN / DPN-ablation | RBF SVC |"
    # 0.90 - 0.80 = +0.100 > 2 x max(0.01, 0.02): marked
    assert table[2] == "| gaussian | 0.1 | 0.800 ± 0.010 / 0.900 ± 0.020 / +0.100* | 0.850 ± 0.000 |"


def test_the_recipe_table_compares_the_dpn_with_its_ablation_and_its_control():
    def row(model, accuracy, std, check=""):
        undefined = {
            f"{m}{s}": float("nan") for m in ("auroc_potential", "acc90_potential") for s in ("", "_std")
        }
        return {
            "model": model,
            "corruption": "pgd_linf",
            "severity": 0.1,
            "accuracy": accuracy,
            "accuracy_std": std,
            "check": check,
            **undefined,
        }

    summary = [
        row("recipe=r variant=ablation", 0.50, 0.01),
        row("recipe=r variant=control", 0.70, 0.05, "1 of 3 seeds: (c) full and BPDA differ by 0.030"),
        row("recipe=r variant=dpn", 0.60, 0.01),
    ]
    table = recipe_table(summary, "accuracy", baselines=False).splitlines()
    assert (
        table[0] == "| corruption | severity | (a) r: ablation / control / DPN / DPN-ablation / DPN-control |"
    )
    # +0.100 > 2 x 0.01: marked; -0.100 < 2 x 0.05: not; the control's row carries its check mark
    assert (
        table[2]
        == "| pgd_linf | 0.1 | 0.500 ± 0.010 / 0.700 ± 0.050 [c] / 0.600 ± 0.010 / +0.100* / -0.100 |"
    )


@pytest.mark.slow  # one training run per committed result (~30 s each on 2 cores)
@pytest.mark.parametrize("result", RESULTS, ids=[r.name for r in RESULTS])
def test_the_sentinel_job_reproduces_its_recorded_test_accuracy(result, make_cfg):
    from dpn_lab.train import train

    sentinel = json.loads((result / "provenance.json").read_text())["sentinel"].split()
    (job,) = [j for j in read_rows(result / "jobs.csv") if set(sentinel) <= set(str(j["overrides"]).split())]
    # the job's own overrides, without what only reports (evaluation under corruption, figures, logs)
    reporting = ["robustness@eval=none", "~callbacks.figures", "logger=none"]
    cfg = make_cfg([*job["overrides"].split(), *reporting])
    metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    assert abs(metrics["test/acc"] - job["test_acc"]) <= 1 / job["n_test"] + 1e-6, (
        f"{result.name}: the sentinel {' '.join(sentinel)} now gets test/acc {metrics['test/acc']:.4f}, the "
        f"committed result says {job['test_acc']:.4f}: training numerics moved; measure the results again"
    )


def test_the_scores_table_marks_a_potential_score_against_the_best_other_score():
    def row(model, ood_set, score, auroc, std):
        return {"model": model, "ood_set": ood_set, "score": score, "auroc": auroc, "auroc_std": std}

    aurocs = {"msp": 0.80, "energy": 0.85, "mahalanobis": 0.90}  # the best other: mahalanobis 0.90
    summary = [row("recipe=a variant=ablation", "noise", s, 0.5, 0.0) for s in (*aurocs, "phi_x0", "phi_xT")]
    summary += [row("recipe=a variant=dpn", "noise", s, a, 0.01) for s, a in aurocs.items()]
    # phi_x0 beats 0.90 by 0.06 > 2 x 0.02: +; phi_xT is 0.03 below, within 2 x 0.02: unmarked
    summary += [row("recipe=a variant=dpn", "noise", "phi_x0", 0.96, 0.02)]
    summary += [row("recipe=a variant=dpn", "noise", "phi_xT", 0.87, 0.02)]
    summary += [row("recipe=a variant=dpn", "blank", s, a, 0.01) for s, a in aurocs.items()]
    summary += [row("recipe=a variant=dpn", "blank", s, 0.2, 0.01) for s in ("phi_x0", "phi_xT")]
    lines = scores_table(summary).splitlines()
    assert lines[0] == "| OOD set | (a) a: -phi(x_0) / -phi(x_T) / best other |"  # the DPN only
    assert lines[2] == "| noise | 0.960 ± 0.020+ / 0.870 ± 0.020 / mahalanobis 0.900 ± 0.010 |"
    assert lines[3] == "| blank | 0.200 ± 0.010- / 0.200 ± 0.010- / mahalanobis 0.900 ± 0.010 |"
