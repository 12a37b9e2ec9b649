"""Committed results reproduce: the pages' results blocks are what results/ renders, every interval and mark
of them is what an independent computation from runs.csv gives, and each result's sentinel job, rerun on
this tree, gets the test accuracy it recorded (to one test image on the recording machine's kernels). A change
that moves training numerics fails here until the results are measured again (`make robustness`)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from conftest import ROOT
from dpn_lab.results import pages
from dpn_lab.robustness.committed import STAGE_ONE, render_text, sentinel_tolerance
from dpn_lab.robustness.long_form import read_runs
from dpn_lab.robustness.verdicts import COMPARISONS, ENDPOINTS
from dpn_lab.runs.cpu_kernels import kernel_identity

RESULTS = sorted(p.parent for p in (ROOT / "results").glob("*/provenance.json"))


@pytest.mark.slow  # the paired statistics of three results (~12 s)
def test_the_pages_results_blocks_are_rendered_from_the_committed_results():
    blocks = 0
    for page in pages(ROOT):
        text = page.read_text()
        blocks += text.count("<!-- results:")
        prefix = "../" if page.parent.name == "docs" else ""
        assert render_text(text, ROOT / "results", prefix) == text, (
            f"{page}: run python -m dpn_lab.results render"
        )
    assert blocks


@pytest.mark.parametrize("result", RESULTS, ids=[r.name for r in RESULTS])
def test_a_result_records_its_commit_command_machine_and_sentinel(result):
    provenance = json.loads((result / "provenance.json").read_text())
    assert len(provenance["commit"]) == 40 and provenance["command"] and provenance["sentinel"]
    assert provenance["kernels"]["mkl_cbwr"] == "AVX2" and provenance["processor"]["model_name"]
    jobs = pd.read_csv(result / "jobs.csv")
    assert len(jobs) and (jobs["status"] == "ok").all()
    assert (result / "comparison_forest.png").is_file()


def _independent_verdicts(
    runs: pd.DataFrame,
) -> dict[tuple[str, str, str, str], tuple[float, float, float, float]]:
    """(endpoint, recipe, treatment, reference) -> (mean difference, interval low, high, Holm p), recomputed
    with plain loops, scipy.stats.ttest_rel and Holm's procedure written out."""
    found = {}
    for endpoint in ENDPOINTS:
        rows = runs[(runs["axis"] == endpoint.axis) & (runs["metric"] == endpoint.metric)]
        if endpoint.kinds:
            rows = rows[rows["kind"].isin(endpoint.kinds)]
        if endpoint.variants:
            rows = rows[rows["variant"].isin(endpoint.variants)]
        rows = {
            "clean": rows[rows["level"] == "0"],
            "shifted": rows[rows["level"] != "0"],
            "all": rows,
        }.get(endpoint.levels, rows[rows["level"] == endpoint.levels])
        for recipe in sorted(set(rows["recipe"]) - {""}):
            mine = rows[rows["recipe"] == recipe]
            for treatment, reference in COMPARISONS:
                if not {treatment, reference} <= set(mine["variant"]):
                    continue
                a, b = (
                    mine[mine["variant"] == v].groupby("seed")["value"].mean().sort_index()
                    for v in (treatment, reference)
                )
                difference = float(np.mean(a - b))
                if np.std(a - b) == 0:  # seeds that agree exactly: a zero-width interval
                    found[(endpoint.name, recipe, treatment, reference)] = [
                        difference,
                        difference,
                        difference,
                        float(difference == 0),
                    ]
                    continue
                test = stats.ttest_rel(a, b)
                low, high = test.confidence_interval(0.95)
                found[(endpoint.name, recipe, treatment, reference)] = [difference, low, high, test.pvalue]
    keys = sorted(found, key=lambda k: found[k][3])
    running = 0.0
    for rank, key in enumerate(keys):  # Holm: p_(k) x (m - k + 1), monotone, capped at 1
        running = max(running, min(1.0, found[key][3] * (len(keys) - rank)))
        found[key][3] = running
    return found


@pytest.mark.parametrize("result", RESULTS, ids=[r.name for r in RESULTS])
def test_every_rendered_verdict_is_what_an_independent_computation_from_runs_csv_gives(result):
    expected = _independent_verdicts(read_runs(result / "runs.csv.gz"))
    table = render_text(f"<!-- results:{result.name}:verdicts -->\n<!-- end results -->", ROOT / "results")
    header, *rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    references = re.findall(r"\| − (\w+) \[95% CI\]", header)
    margins = {e.name: e.margin for e in ENDPOINTS}
    checked = 0
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        endpoint, recipe, treatment = cells[0], cells[1], cells[2]
        for i, reference in enumerate(references):
            if cells[4 + 5 * i + 1] == "–":
                continue
            interval, holm_p = cells[4 + 5 * i + 1], cells[4 + 5 * i + 2]
            difference, low, high = map(float, re.findall(r"[+-]\d\.\d+", interval))
            want = expected[(endpoint, recipe, treatment, reference)]
            where = (endpoint, recipe, treatment, reference)
            assert (difference, low, high) == pytest.approx(want[:3], abs=6e-4), where
            assert float(holm_p) == pytest.approx(want[3], rel=2e-3, abs=1e-3), where
            verdict = cells[4 + 5 * i + 4].strip("*")
            margin = margins[endpoint]
            if -margin < want[1] and want[2] < margin:
                assert verdict.startswith("equivalent"), where
            elif want[3] < 0.05:
                assert verdict in ("better", "worse"), where
            else:
                assert verdict == "inconclusive", where
            checked += 1
    assert checked == len(expected)


def test_the_tolerance_is_one_image_on_the_recording_kernels_and_the_seed_spread_elsewhere(tmp_path):
    result = RESULTS[0]
    provenance = json.loads((result / "provenance.json").read_text())
    tolerance, why = sentinel_tolerance(result, provenance["kernels"])
    n_test = pd.read_csv(result / "jobs.csv")["n_test"].iloc[0]
    assert tolerance == pytest.approx(1 / n_test) and "one test image" in why
    newer = {
        **provenance["kernels"],
        "a_key_recorded_since": "x",
    }  # what the recording predates is not compared
    assert sentinel_tolerance(result, newer)[0] == pytest.approx(1 / n_test)
    other = {**provenance["kernels"], "mkl_cbwr": "AUTO"}
    tolerance, why = sentinel_tolerance(result, other)
    runs = read_runs(result / "runs.csv.gz")
    sentinel = dict(o.split("=") for o in provenance["sentinel"].split())
    accuracies = runs[
        (runs["metric"] == "test/acc")
        & (runs["variant"] == sentinel["variant"])
        & (runs["recipe"] == sentinel["recipe"])
    ]["value"]
    assert tolerance == pytest.approx(2 * np.std(accuracies.to_numpy(), ddof=1))
    assert "mkl_cbwr AVX2 there, AUTO here" in why


# Rerun: one sentinel per code path, to keep `make test` within CI's 15 minutes. Not rerun: a confirmatory
# result (<name>_confirm: <name>'s jobs on other seeds) and robustness_mnist5k_frozen, whose stage 1 is checked
# number by number against robustness_mnist5k (test_the_frozen_comparisons_stage_one_reproduces_...) and
# whose stage 2 runs the code of robustness_digits_frozen's sentinel on robustness_mnist5k's data path.
SENTINELS = [r for r in RESULTS if not r.name.endswith("_confirm") and r.name != "robustness_mnist5k_frozen"]


@pytest.mark.slow  # one training run per committed result (~30-60 s each on 2 cores)
@pytest.mark.parametrize("result", SENTINELS, ids=[r.name for r in SENTINELS])
def test_the_sentinel_job_reproduces_its_recorded_test_accuracy(result, make_cfg):
    from dpn_lab.train import train

    provenance = json.loads((result / "provenance.json").read_text())
    sentinel = provenance["sentinel"].split()
    jobs = pd.read_csv(result / "jobs.csv")
    (job,) = jobs[jobs["overrides"].map(lambda o: set(sentinel) <= set(o.split()))].to_dict("records")
    # the job's own overrides, without what only reports (evaluation under corruption, figures, logs)
    reporting = ["robustness@eval=none", "logger=none"]  # the comparison experiments draw no figures
    overrides = [*job["overrides"].split(), *reporting]
    threads = torch.get_num_threads()
    torch.set_num_threads(provenance["kernels"]["torch_threads"])  # reductions split by thread
    try:
        if (result / STAGE_ONE).is_file():  # a stage-2 sentinel: from the recorded stage-1 checkpoint
            overrides.append(f"model.init_from={result / STAGE_ONE}")
        cfg = make_cfg(overrides)
        metrics, _ = train(cfg, Path(cfg.paths.output_dir))
    finally:
        torch.set_num_threads(threads)
    tolerance, why = sentinel_tolerance(
        result, kernel_identity() | {"torch_threads": provenance["kernels"]["torch_threads"]}
    )
    assert abs(metrics["test/acc"] - job["test_acc"]) <= tolerance, (
        f"{result.name}: the sentinel {' '.join(sentinel)} now gets test/acc {metrics['test/acc']:.4f}, the "
        f"committed result says {job['test_acc']:.4f} (allowed: {tolerance:.4f}, {why}): training numerics "
        "moved; measure the results again"
    )


@pytest.mark.parametrize("data", ["digits", "mnist5k"])
def test_the_frozen_comparisons_stage_one_reproduces_the_main_comparisons_ablation(data):
    """variant=stage_one is the main comparison's robust_extractor ablation, recorded again on another commit
    and in another sweep: every number the two recordings share is equal."""
    main, frozen = (
        read_runs(ROOT / "results" / name / "runs.csv.gz")
        for name in (f"robustness_{data}", f"robustness_{data}_frozen")
    )
    main = main[(main["recipe"] == "robust_extractor") & (main["variant"] == "ablation")]
    keys = ["seed", "axis", "kind", "level", "metric"]
    shared = main.merge(frozen[frozen["variant"] == "stage_one"], on=keys, suffixes=("_main", "_frozen"))
    assert len(shared) > 1000
    assert (shared["value_main"] == shared["value_frozen"]).all()
