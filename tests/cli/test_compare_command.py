"""`python -m dpn_lab.results compare`: the paired comparison of any sweep, and its refusals (one `error:` line
each, nothing written). The sweeps here are result.json files in the layout a multirun leaves."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import run_in_process

ACCURACY = {  # (variant, seed) -> test/acc
    ("ablation", 0): 0.90,
    ("ablation", 1): 0.92,
    ("ablation", 2): 0.95,
    ("dpn", 0): 0.93,
    ("dpn", 1): 0.94,
    ("dpn", 2): 0.96,
    ("control", 0): 0.91,
    ("control", 1): 0.90,
    ("control", 2): 0.97,
}


def make_sweep(root, accuracy=ACCURACY, key="variant"):
    root.mkdir()
    for job, ((variant, seed), value) in enumerate(accuracy.items()):
        (root / str(job)).mkdir()
        result = {
            "status": "ok",
            "overrides": [f"{key}={variant}", f"seed={seed}"],
            "metrics": {"test/acc": value, "val/acc_best": value - 0.01},
            "error": None,
        }
        (root / str(job) / "result.json").write_text(json.dumps(result))
    return root


def compare(tmp_path, *args):
    return run_in_process("dpn_lab.results", "compare", *args, cwd=tmp_path)


def test_a_sweep_gets_the_paired_table_of_every_variant_against_the_reference(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    done = compare(tmp_path, str(sweep), "--by", "variant", "--reference", "ablation")
    assert done.returncode == 0, done.stderr
    paired = pd.read_csv(sweep / "paired.csv")
    accuracy = paired[paired["metric"] == "test/acc"].set_index("treatment")
    assert set(accuracy.index) == {"dpn", "control"}
    for treatment in ("dpn", "control"):
        ours = [ACCURACY[(treatment, s)] for s in range(3)]
        theirs = [ACCURACY[("ablation", s)] for s in range(3)]
        test = stats.ttest_rel(ours, theirs)
        low, high = test.confidence_interval(0.95)
        row = accuracy.loc[treatment]
        assert row["diff"] == pytest.approx(np.mean(ours) - np.mean(theirs))
        assert (row["ci_low"], row["ci_high"], row["p"]) == pytest.approx((low, high, test.pvalue))
    runs = pd.read_csv(sweep / "runs.csv")
    assert len(runs) == 18 and set(runs["metric"]) == {"test/acc", "val/acc_best"}
    assert "| test/acc |  | 0.943 ± 0.015 | +0.020 |" in done.stdout  # dpn: mean, sd and mean difference


def test_a_numeric_key_compares_against_its_reference_value(tmp_path):
    steps = {(s, seed): 0.9 + 0.01 * (s == "5") + 0.001 * seed for s in ("0", "5") for seed in range(3)}
    sweep = make_sweep(tmp_path / "sweep", steps, key="model.n_steps")
    done = compare(tmp_path, str(sweep), "--by", "model.n_steps", "--reference", "0")
    assert done.returncode == 0, done.stderr
    row = pd.read_csv(sweep / "paired.csv").query("metric == 'test/acc'").iloc[0]
    assert row["treatment"] == 5 and row["diff"] == pytest.approx(0.01) and row["p"] == 0.0


@pytest.mark.parametrize(
    "args, accuracy, message",
    [
        (["--by", "variant", "--reference", "ablation"], None, "not a sweep directory"),
        (["--by", "recipe", "--reference", "ablation"], ACCURACY, "job 0 has no override recipe="),
        (["--by", "variant", "--reference", "baseline"], ACCURACY, "no job has the value 'baseline'"),
        (
            ["--by", "variant", "--reference", "ablation"],
            {k: v for k, v in ACCURACY.items() if k != ("dpn", 2)},
            r"variant dpn lacks seeds \[2\]",
        ),
        (
            ["--by", "variant", "--reference", "ablation"],
            {k: v for k, v in ACCURACY.items() if k[1] == 0},
            "at least 2",
        ),
    ],
    ids=["not-a-sweep", "absent-key", "absent-reference", "unmatched-seeds", "one-seed"],
)
def test_what_cannot_be_paired_is_one_error_line_and_nothing_written(tmp_path, args, accuracy, message):
    sweep = make_sweep(tmp_path / "sweep", accuracy) if accuracy else (tmp_path / "sweep")
    if accuracy is None:
        sweep.mkdir()
        (sweep / "notes.txt").write_text("not a job")
    before = sorted(p.name for p in sweep.rglob("*"))
    done = compare(tmp_path, str(sweep), *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ConfigError: ")
    assert pytest.importorskip("re").search(message, lines[0]), lines[0]
    assert sorted(p.name for p in sweep.rglob("*")) == before
