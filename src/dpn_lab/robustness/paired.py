"""Paired statistics of a comparison: a model against its reference, seed by seed.

The seed draws the data split and the training run of every variant, so the variants of one seed are a
pair: the difference is measured within each seed, and the spread that matters is that of the differences.
For each compared quantity, over the n seeds:
  mean difference d = mean_s (treatment_s - reference_s), sd its sample standard deviation,
  95% interval d +- t_{0.975, n-1} sd / sqrt(n), two-sided p of the paired t-test (scipy.stats.ttest_1samp),
  mdd80: the smallest true difference the test detects with 80% power at two-sided alpha 0.05, from the
  measured sd (exact, through the noncentral t distribution), so that a negative reads "no effect above X".
Corrections within a table (`corrected`): Holm (family-wise error) for the few primary endpoints, each of
which is a claim quoted on its own; Benjamini-Hochberg (false-discovery rate, valid for the positively
dependent levels of one axis, which share their models) for the many levels of a per-level table.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
from scipy import optimize, stats

from dpn_lab.errors import ConfigError

ALPHA, POWER = 0.05, 0.8
STAT_COLUMNS = (
    "n_seeds",
    "mean_treatment",
    "mean_reference",
    "diff",
    "ci_low",
    "ci_high",
    "sd_diff",
    "p",
    "mdd80",
)


def paired_summary(differences: np.ndarray) -> dict[str, float]:
    """Mean, 95% t-interval, sd, paired t-test p and mdd80 of one set of per-seed differences (module doc).
    Seeds that agree exactly (sd 0) give a zero-width interval and p = 1 when the difference is 0."""
    d = np.asarray(differences, dtype=float)
    n, mean = len(d), float(d.mean())
    sd = float(d.std(ddof=1))
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / np.sqrt(n)
    if sd > 0:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    else:
        p = 1.0 if mean == 0 else 0.0
    return {
        "n_seeds": n,
        "diff": mean,
        "ci_low": mean - half,
        "ci_high": mean + half,
        "sd_diff": sd,
        "p": p,
        "mdd80": minimum_detectable(sd, n),
    }


def minimum_detectable(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test of n seeds detects with `power` at `alpha`, for
    differences of standard deviation sd: the effect size delta solving P(|T| > t_crit | ncp = delta sqrt(n))
    = power, T noncentral t with n - 1 degrees of freedom, times sd."""
    return 0.0 if sd == 0 else detectable_effect(n, alpha, power) * sd


@cache  # depends on (n, alpha, power) only: one root per seed count, not one per table row
def detectable_effect(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """delta of `minimum_detectable` in units of the differences' standard deviation."""
    df, critical = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(effect: float) -> float:
        ncp = effect * np.sqrt(n)
        wrong_sign = np.nan_to_num(stats.nct.cdf(-critical, df, ncp))  # NaN where it underflows (far tail)
        return stats.nct.sf(critical, df, ncp) + wrong_sign - power

    upper = 1.0
    while shortfall(upper) < 0:
        upper *= 2
    return float(optimize.brentq(shortfall, 1e-9, upper))


def holm(p: pd.Series) -> pd.Series:
    """Holm's step-down adjusted p-values: sorted ascending, p_(k) (m - k + 1), made monotone, capped at 1."""
    order = p.sort_values()
    m = len(order)
    adjusted = (order * np.arange(m, 0, -1)).cummax().clip(upper=1.0)
    return adjusted.reindex(p.index)


def corrected(p: pd.Series, method: str) -> pd.Series:
    """Adjusted p-values of one table's comparisons: method holm or bh (Benjamini-Hochberg)."""
    if p.empty:
        return p
    if method == "holm":
        return holm(p)
    return pd.Series(stats.false_discovery_control(p.to_numpy()), index=p.index)


def check_pairs(frame: pd.DataFrame, treatment: str, reference: str) -> None:
    """ConfigError unless, for each recipe, treatment and reference ran the same seeds, at least 2."""
    seeds = frame.groupby(["recipe", "variant"])["seed"].agg(lambda s: set(s.dropna().astype(int)))
    for recipe in frame.loc[frame["variant"] == treatment, "recipe"].unique():
        have, need = seeds.get((recipe, treatment), set()), seeds.get((recipe, reference), set())
        where = f" of recipe {recipe!r}" if recipe else ""
        if have != need:
            missing = sorted(need - have), sorted(have - need)
            raise ConfigError(
                f"unmatched seeds{where}: variant {treatment} lacks seeds {missing[0]}, variant {reference} "
                f"lacks seeds {missing[1]}; a paired comparison needs both on the same seeds (rerun the missing jobs)"
            )
        if len(have) < 2:
            raise ConfigError(
                f"variant {treatment}{where} has {len(have)} seed(s): a paired interval needs at least 2 "
                "(sweep seed=0,1,2,...)"
            )


def paired_differences(
    frame: pd.DataFrame,
    treatment: str,
    reference: str,
    keys: tuple[str, ...] = ("axis", "kind", "level", "metric"),
) -> pd.DataFrame:
    """One row per (recipe, *keys) where both variants have every seed: the means of each and STAT_COLUMNS
    of treatment minus reference. `frame` is long form (dpn_lab.robustness.long_form)."""
    check_pairs(frame, treatment, reference)
    index = ["recipe", *keys, "seed"]
    both = frame[frame["variant"].isin([treatment, reference]) & ~frame["metric"].str.startswith("check")]
    wide = both.pivot_table(index=index, columns="variant", values="value", aggfunc="first", sort=False)
    wide = wide.dropna()
    rows = []
    for group, seeds in wide.groupby(level=list(range(len(index) - 1)), sort=False):
        if len(seeds) < 2:
            continue
        summary = paired_summary((seeds[treatment] - seeds[reference]).to_numpy())
        rows.append(
            {
                **dict(zip(["recipe", *keys], group, strict=True)),
                "treatment": treatment,
                "reference": reference,
                "mean_treatment": float(seeds[treatment].mean()),
                "mean_reference": float(seeds[reference].mean()),
                **summary,
            }
        )
    return pd.DataFrame(rows, columns=["recipe", *keys, "treatment", "reference", *STAT_COLUMNS])
