"""Paired statistics: intervals, p-values, corrections and power checked against scipy's own paired test,
a hand computation and a simulation."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dpn_lab.errors import ConfigError
from dpn_lab.robustness.paired import (
    corrected,
    holm,
    minimum_detectable,
    paired_differences,
    paired_summary,
)


def test_the_paired_interval_and_p_value_are_scipys_paired_t_test():
    treatment = np.array([0.91, 0.95, 0.90, 0.97, 0.93])
    reference = np.array([0.90, 0.92, 0.91, 0.93, 0.90])
    summary = paired_summary(treatment - reference)
    test = stats.ttest_rel(treatment, reference)
    low, high = test.confidence_interval(0.95)
    assert summary["p"] == pytest.approx(test.pvalue, rel=1e-12)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    assert summary["diff"] == pytest.approx(0.02)
    assert summary["n_seeds"] == 5


def test_seeds_that_agree_exactly_give_a_zero_width_interval():
    same = paired_summary(np.zeros(3))
    assert (same["ci_low"], same["ci_high"], same["p"], same["mdd80"]) == (0.0, 0.0, 1.0, 0.0)
    assert paired_summary(np.full(3, 0.01))["p"] == 0.0


def test_holm_matches_the_step_down_procedure_done_by_hand():
    p = pd.Series([0.01, 0.04, 0.03, 0.005], index=list("abcd"))
    # sorted: d 0.005 x 4 = 0.02, a 0.01 x 3 = 0.03, c 0.03 x 2 = 0.06, b 0.04 x 1 = 0.04 -> max(0.06, 0.04)
    assert holm(p).to_dict() == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert corrected(pd.Series([0.5, 0.9]), "holm").tolist() == [1.0, 1.0]  # capped at 1


def test_benjamini_hochberg_is_scipys():
    p = pd.Series([0.001, 0.02, 0.03, 0.5])
    # by hand: 0.001 x 4/1 = 0.004, 0.02 x 4/2 = 0.04, 0.03 x 4/3 = 0.04, 0.5 x 4/4 = 0.5
    assert corrected(p, "bh").tolist() == pytest.approx([0.004, 0.04, 0.04, 0.5])


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_minimum_detectable_difference_is_detected_four_times_in_five(n):
    sd = 0.01
    effect = minimum_detectable(sd, n)
    rng = np.random.default_rng(0)
    draws = rng.normal(effect, sd, size=(40_000, n))
    rejected = stats.ttest_1samp(draws, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    # the normal approximation of the notes ((t_0.975 + t_0.8) sd / sqrt(n)) is close but not exact
    approximation = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
    assert effect == pytest.approx(approximation, rel=0.12)


def _frame(values: dict[tuple[str, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "recipe": "r",
                "variant": variant,
                "seed": seed,
                "axis": "test",
                "kind": "",
                "level": "",
                "metric": "test/acc",
                "value": value,
                "job": 0,
            }
            for (variant, seed), value in values.items()
        ]
    )


def test_paired_differences_pair_by_seed_not_by_order():
    frame = _frame({("dpn", 0): 0.9, ("dpn", 1): 0.8, ("ablation", 1): 0.7, ("ablation", 0): 0.85})
    (row,) = paired_differences(frame, "dpn", "ablation").to_dict("records")
    assert row["diff"] == pytest.approx(np.mean([0.9 - 0.85, 0.8 - 0.7]))
    assert row["mean_treatment"] == pytest.approx(0.85) and row["mean_reference"] == pytest.approx(0.775)


def test_a_variant_missing_a_seed_is_named():
    frame = _frame({("dpn", 0): 0.9, ("dpn", 1): 0.8, ("ablation", 0): 0.85, ("ablation", 2): 0.7})
    with pytest.raises(
        ConfigError, match=r"variant dpn lacks seeds \[2\], variant ablation lacks seeds \[1\]"
    ):
        paired_differences(frame, "dpn", "ablation")


def test_one_seed_is_refused():
    with pytest.raises(ConfigError, match="1 seed.*at least 2"):
        paired_differences(_frame({("dpn", 0): 0.9, ("ablation", 0): 0.85}), "dpn", "ablation")
