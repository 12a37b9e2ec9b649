"""One verdict per axis, declared before the numbers: the primary endpoints of a robustness comparison.

Each endpoint is one number per (recipe, variant, seed), the mean of that job's values over the endpoint's
levels; the DPN minus its ablation and minus its control is then one paired interval over seeds
(dpn_lab.robustness.paired), Holm-corrected over every row of the verdict table. A row says
  equivalent (+-m)      the 95% interval lies inside +-margin: no effect as large as the margin (even when
                        the difference is significant: seeds that agree closely make a negligible one so);
  better / worse        otherwise, the Holm-adjusted p < 0.05, in the endpoint's good / bad direction;
  inconclusive          neither: the interval reaches past the margin and does not exclude 0.
Noise: gaussian, salt_pepper, shot_noise; geometric (MNIST-C's affine shifts): rotate, translate, shear,
scale; photometric: blur, motion_blur, brightness, occlusion; each at its shifted (severity > 0) levels.
The margins are those that would matter to a user of the model: 1 point of accuracy or of ECE, 0.02 AUROC,
0.05 of the denoising ratio (dpn_lab.robustness.evaluate.denoising_ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dpn_lab.robustness.paired import corrected, paired_differences

FROZEN_TREATMENTS, FROZEN_REFERENCES = (
    ("tweedie", "denoise", "density"),
    ("refit_ablation", "denoiser_control"),
)
FROZEN = FROZEN_TREATMENTS + FROZEN_REFERENCES  # the stage-2 variants of recipe=frozen_denoiser
# (treatment, reference) of a committed comparison
COMPARISONS = (
    ("dpn", "ablation"),
    ("dpn", "control"),
    *((t, r) for t in FROZEN_TREATMENTS for r in FROZEN_REFERENCES),
)
OOD_SCORES = ("phi_x0", "phi_xT", "msp", "energy", "mahalanobis")


@dataclass(frozen=True)
class Endpoint:
    name: str
    axis: str
    metric: str
    kinds: tuple[str, ...] | None  # None: every kind the axis has
    levels: str  # "clean" (severity 0), "shifted" (severity > 0), "all", or one level
    margin: float
    higher_is_better: bool = True
    variants: tuple[str, ...] | None = None  # declared for these variants' comparisons only (None: all)


ENDPOINTS = (
    Endpoint("clean accuracy", "corruption", "accuracy", None, "clean", 0.01),
    Endpoint(
        "accuracy under noise",
        "corruption",
        "accuracy",
        ("gaussian", "salt_pepper", "shot_noise"),
        "shifted",
        0.01,
    ),
    Endpoint(
        "accuracy under geometric shifts",
        "corruption",
        "accuracy",
        ("rotate", "translate", "shear", "scale"),
        "shifted",
        0.01,
    ),
    Endpoint(
        "accuracy under photometric shifts",
        "corruption",
        "accuracy",
        ("blur", "motion_blur", "brightness", "occlusion"),
        "shifted",
        0.01,
    ),
    # declared with the frozen-denoiser comparison, before its runs: the noise pairs' own severity
    # (conf/recipe/frozen_denoiser.yaml), where a denoiser fitted to that noise must help if it helps anywhere,
    # and the feature-space denoising it achieved there
    Endpoint(
        "accuracy under gaussian 0.3", "corruption", "accuracy", ("gaussian",), "0.3", 0.01, True, FROZEN
    ),
    Endpoint(
        "denoising ratio, gaussian 0.3",
        "corruption",
        "denoising_ratio",
        ("gaussian",),
        "0.3",
        0.05,
        False,
        FROZEN,
    ),
    # the adversarial recipe's training pairs: conf/recipe/adversarial.yaml, pgd_linf at 0.2
    Endpoint("PGD Linf 0.2 accuracy", "attack", "accuracy", ("pgd_linf",), "0.2", 0.01),
    Endpoint("ECE, all levels", "corruption", "ece", None, "all", 0.01, higher_is_better=False),
    *(Endpoint(f"OOD AUROC of {score}", "ood", "auroc", None, score, 0.02) for score in OOD_SCORES),
)


def endpoint_values(frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form rows (axis "endpoint", kind = its name) of every endpoint the frame has data for: per job,
    the mean of its values over the endpoint's levels (the shifted levels of the kinds it names; every
    corruption level, clean included, for ECE; every OOD set for an OOD score)."""
    parts = []
    for e in ENDPOINTS:
        rows = frame[(frame["axis"] == e.axis) & (frame["metric"] == e.metric)]
        if e.kinds is not None:
            rows = rows[rows["kind"].isin(e.kinds)]
        if e.variants is not None:
            rows = rows[rows["variant"].isin(e.variants)]
        if e.levels == "clean":
            rows = rows[rows["level"] == "0"]
        elif e.levels == "shifted":
            rows = rows[rows["level"] != "0"]
        elif e.levels != "all":
            rows = rows[rows["level"] == e.levels]
        if rows.empty:
            continue
        means = rows.groupby(["recipe", "variant", "seed"], as_index=False, sort=False)["value"].mean()
        parts.append(means.assign(axis="endpoint", kind=e.name, level="", metric=e.metric))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=frame.columns)


def verdict_table(frame: pd.DataFrame, comparisons=COMPARISONS) -> pd.DataFrame:
    """Rows: (recipe, endpoint, reference) with the paired statistics, the Holm-adjusted p over the whole
    table, the margin and the verdict (module docstring)."""
    values = endpoint_values(frame)
    if values.empty:  # a sweep that ran none of the endpoints' evaluations
        return pd.DataFrame()
    present = set(frame["variant"])
    tables = [
        paired_differences(values, treatment, reference, ("kind",))
        for treatment, reference in comparisons
        if {treatment, reference} <= present
    ]
    table = pd.concat(tables, ignore_index=True).rename(columns={"kind": "endpoint"})
    table["p_holm"] = corrected(table["p"], "holm")
    table["holm_family"] = len(table)  # a page may show some rows: the correction was over all of them
    spec = {e.name: e for e in ENDPOINTS}
    table["margin"] = table["endpoint"].map(lambda name: spec[name].margin)

    def verdict(row: pd.Series) -> str:
        good = 1 if spec[row["endpoint"]].higher_is_better else -1
        if -row["margin"] < row["ci_low"] and row["ci_high"] < row["margin"]:
            # first: seeds that agree to the last digit make a difference of 1e-5 "significant"
            return f"equivalent (±{row['margin']:g})"
        if row["p_holm"] < 0.05:
            return "better" if good * row["diff"] > 0 else "worse"
        return "inconclusive"

    table["verdict"] = table.apply(verdict, axis=1)
    order = table["endpoint"].map({e.name: i for i, e in enumerate(ENDPOINTS)})
    return table.iloc[order.argsort(kind="stable")].reset_index(drop=True)  # recipes in the sweep's order


def verdict_markdown(table: pd.DataFrame) -> str:
    """The verdict table as markdown: a row per (endpoint, recipe, treatment), a column group per reference."""

    def interval(r: pd.Series) -> str:
        return f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"

    references = list(dict.fromkeys(table["reference"]))
    header = ["endpoint", "recipe", "model", "mean"]
    for ref in references:
        header += [ref, f"− {ref} [95% CI]", "Holm p", "MDD80", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (endpoint, recipe, treatment), rows in table.groupby(["endpoint", "recipe", "treatment"], sort=False):
        cells = [endpoint, recipe or "–", treatment, f"{rows['mean_treatment'].iloc[0]:.3f}"]
        by_reference = rows.set_index("reference")
        for ref in references:
            if ref not in by_reference.index:
                cells += ["–"] * 5
                continue
            r = by_reference.loc[ref]
            cells += [
                f"{r['mean_reference']:.3f}",
                interval(r),
                f"{r['p_holm']:.3g}",
                f"{r['mdd80']:.3f}",
                f"**{r['verdict']}**",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    n = int(table["n_seeds"].max())
    return "\n".join(lines) + (
        f"\n\nMeans over {n} seeds (paired: a seed draws the split and trains every variant). − ref: the mean "
        "per-seed difference with its 95% paired t-interval; Holm p: adjusted over the comparison's "
        f"{int(table['holm_family'].max())} comparisons; MDD80: the smallest true difference the paired test detects with 80% power "
        "at alpha 0.05 (uncorrected), from the measured spread. Equivalence margins: 0.01 for accuracy and "
        "ECE, 0.02 for AUROC, 0.05 for the denoising ratio.\n"
    )
