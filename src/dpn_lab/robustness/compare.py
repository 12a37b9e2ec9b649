"""The comparison of a sweep: per-seed numbers in long form, paired intervals, verdicts and figures.

The RobustnessComparison Hydra callback (the robustness experiments) and `python -m dpn_lab.results compare`
(any sweep) call `compare_sweep`. Each job has written result.json and, when it ran evaluations,
robustness.json (its rows, data config and test-index digest), adversarial.csv, ood.csv and test_steps.csv.
The calibration baselines (logistic regression, RBF SVC) are fitted on each job's exact training split and
evaluated on the same test indices and corrupted copies. Jobs are grouped by one key (`by`, e.g. variant):
each other value of it (the treatments) is compared seed by seed with the reference value(s) of the key.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError
from dpn_lab.robustness.attacks import ATTACKS
from dpn_lab.robustness.evaluate import index_digest, robustness_rows
from dpn_lab.robustness.long_form import runs_frame, write_runs
from dpn_lab.robustness.paired import corrected, paired_differences
from dpn_lab.robustness.verdicts import verdict_markdown, verdict_table
from dpn_lab.viz.plots import accuracy_plot, forest_plot, save_figure

log = logging.getLogger(__name__)
BASELINES = {
    "logistic regression": lambda: LogisticRegression(max_iter=3000, C=1.0),
    "RBF SVC": lambda: SVC(kernel="rbf", C=10.0, gamma="scale"),
}


def attack_rows(path: Path) -> list[dict[str, Any]]:
    """A job's adversarial.csv as comparison rows: per (attack, eps) the strongest variant's accuracy as
    `corruption`=attack, `severity`=eps (the masking check as its own row), with its check marks."""
    if not path.is_file():
        return []
    best: dict[tuple[str, float], dict[str, Any]] = {}
    for row in csv.DictReader(path.open()):
        kind = row["attack"] + (" masking check" if row["gradient"] == "masking check" else "")
        found = best.setdefault(
            (kind, float(row["eps"])),
            {"corruption": kind, "severity": float(row["eps"]), "accuracy": 1.0, "check": ""},
        )
        found["accuracy"] = min(found["accuracy"], float(row["accuracy"]))
        if row["check"]:
            found["check"] = "; ".join(c for c in (found["check"], row["check"]) if c)
    return list(best.values())


def baseline_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every baseline on every distinct data split of the sweep, at the same corruption levels and seeds."""
    rows, seen = [], set()
    for meta in jobs:
        key = json.dumps(meta["data"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        datamodule = build_data_module(meta["data"], f"{meta['path']}: data")
        datamodule.setup()
        digest = index_digest(datamodule.split_indices[meta.get("split", "test")])
        if digest != meta["test_index_digest"]:
            raise RuntimeError(
                f"the rebuilt test split differs from the job's ({digest} != {meta['test_index_digest']})"
            )
        train, test = datamodule.splits["train"], datamodule.splits[meta.get("split", "test")]
        for name, make in BASELINES.items():
            model = make().fit(train.inputs.flatten(1).numpy(), train.labels.numpy())

            def predict(inputs: torch.Tensor, model=model) -> dict[str, torch.Tensor]:
                return {"predicted": torch.as_tensor(model.predict(inputs.flatten(1).numpy()))}

            found = robustness_rows(predict, test.inputs, test.labels, meta["levels"], meta["eval_seed"])
            rows += [{**row, "model": name, "test_set": digest} for row in found]
    return rows


def comparisons_of(
    frame: pd.DataFrame,
    references: list[str],
    treatments: list[str] | None = None,
    only_present: bool = False,
) -> list[tuple[str, str]]:
    """(treatment, reference) pairs: each treatment (default: every value of the grouping key that is not a
    reference) against each reference. A named value that no job has is a ConfigError, or, with
    `only_present` (a sweep's callback, whose experiment may be cut down on the command line), skipped."""
    values = list(dict.fromkeys(frame.loc[frame["job"].notna(), "variant"]))
    absent = [name for name in [*references, *(treatments or [])] if name not in values]
    if absent and not only_present:
        raise ConfigError(
            f"no job has the value {absent[0]!r} of the grouping key; its values: {', '.join(values)}"
        )
    references = [r for r in references if r in values]
    treatments = (
        [t for t in treatments if t in values] if treatments else [v for v in values if v not in references]
    )
    return [(t, r) for t in treatments for r in references if t != r]


def paired_levels(
    frame: pd.DataFrame, comparisons: list[tuple[str, str]], tables: list[tuple[str, str]] | None = None
) -> pd.DataFrame:
    """Every (recipe, axis, kind, level, metric) of every comparison (or only those of the (axis, metric)
    `tables`), with its paired statistics and p_bh, the Benjamini-Hochberg adjusted p within its table (one
    axis and metric: a rendered per-level table)."""
    if tables is not None:
        frame = frame[
            pd.Series(list(zip(frame["axis"], frame["metric"], strict=True)), index=frame.index).isin(tables)
        ]
    parts = [paired_differences(frame, t, r) for t, r in comparisons]
    table = pd.concat(parts, ignore_index=True)
    table["p_bh"] = table.groupby(["axis", "metric"])["p"].transform(lambda p: corrected(p, "bh"))
    return table


def model_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and number of seeds per model (recipe and variant) and level: a view for plots and
    reading, derived from the per-seed rows."""
    keys = ["recipe", "variant", "axis", "kind", "level", "metric"]
    values = frame[~frame["metric"].str.startswith("check")]
    return (
        values.groupby(keys, sort=False)["value"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    )


def level_markdown(
    frame: pd.DataFrame, paired: pd.DataFrame, axis: str, metric: str, baselines: bool = False
) -> str:
    """Rows: the levels of one axis (the clean level once); per recipe and treatment: its mean ± std, then
    its paired difference from each reference, * where the Benjamini-Hochberg adjusted p < 0.05 within this
    table, [a]/[b]/[c] where a seed's attack row failed that masking check; the baselines' columns last."""
    rows = frame[(frame["axis"] == axis)]
    summary = model_summary(rows[rows["metric"] == metric])
    mine = paired[(paired["axis"] == axis) & (paired["metric"] == metric)]
    checks = rows[rows["metric"].str.startswith("check")].groupby(["recipe", "variant", "kind", "level"])[
        "metric"
    ]
    marks = checks.agg(lambda m: "".join(sorted(x[-2] for x in set(m)))).to_dict()
    levels = list(dict.fromkeys(zip(summary["kind"], summary["level"], strict=True)))
    if axis == "corruption":  # the clean level is the same images for every kind: once
        levels = [(k, lv) for k, lv in levels if lv != "0"]
        clean = summary[summary["level"] == "0"]["kind"]
        levels = ([(clean.iloc[0], "0")] if len(clean) else []) + levels
    cells = summary.set_index(["recipe", "variant", "kind", "level"])
    groups = list(dict.fromkeys(zip(mine["recipe"], mine["treatment"], strict=True)))
    references = {
        g: list(dict.fromkeys(mine[(mine["recipe"] == g[0]) & (mine["treatment"] == g[1])]["reference"]))
        for g in groups
    }
    differences = mine.set_index(["recipe", "treatment", "reference", "kind", "level"])
    others = [v for v in dict.fromkeys(summary.loc[summary["recipe"] == "", "variant"])] if baselines else []

    def number(recipe: str, variant: str, kind: str, level: str) -> str:
        key = (recipe, variant, kind, level)
        if key not in cells.index:
            return "–"
        row = cells.loc[key]
        mark = marks.get(key, "")
        return f"{row['mean']:.3f} ± {row['std']:.3f}" + (f" [{mark}]" if mark else "")

    def difference(key: tuple) -> str:
        if key not in differences.index:
            return "–"
        d = differences.loc[key]
        return f"{d['diff']:+.3f}" + ("*" if d["p_bh"] < 0.05 else "")

    header = [
        f"{'clean / ' if axis == 'corruption' else ''}{'kind' if axis != 'ood' else 'OOD set'}",
        "severity" if axis != "ood" else "score",
    ]
    for recipe, treatment in groups:
        header.append(f"{recipe or treatment}: {treatment}")
        header += [f"− {ref}" for ref in references[(recipe, treatment)]]
    header += others
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, level in levels:
        values = [("clean" if level == "0" and axis == "corruption" else kind or metric), level]
        for recipe, treatment in groups:
            values.append(number(recipe, treatment, kind, level))
            values += [
                difference((recipe, treatment, ref, kind, level)) for ref in references[(recipe, treatment)]
            ]
        values += [number("", other, kind, level) for other in others]
        lines.append("| " + " | ".join(values) + " |")
    n = int(summary["n_seeds"].max()) if len(summary) else 0
    return "\n".join(lines) + (
        f"\n\n{metric}: mean ± sample std over {n} seeds; − ref: the mean paired difference (treatment minus "
        "reference, seed by seed); * where the Benjamini-Hochberg adjusted p of the paired t-test < 0.05 within "
        f"this table ({len(mine)} comparisons).\n"
    )


def compare_sweep(
    sweep_dir: Path,
    by: str = "variant",
    references: tuple[str, ...] = ("ablation",),
    treatments: tuple[str, ...] | None = None,
    only_present: bool = False,
) -> pd.DataFrame:
    """Write into the sweep directory: runs.csv (long form), comparison.csv (mean ± std per model),
    paired.csv (every paired difference), comparison.md (the verdicts where the sweep measured the
    endpoints, then the per-level accuracy table), comparison_forest.png and comparison.png. Returns
    the long-form frame. ConfigError (nothing written) for what cannot be paired."""
    frame = runs_frame(sweep_dir, by)
    comparisons = comparisons_of(
        frame, list(references), list(treatments) if treatments else None, only_present
    )
    paired = paired_levels(frame, comparisons)
    verdicts = verdict_table(frame, comparisons)
    write_runs(frame, sweep_dir / "runs.csv")
    model_summary(frame).to_csv(sweep_dir / "comparison.csv", index=False)
    paired.to_csv(sweep_dir / "paired.csv", index=False)
    sections = []
    if len(verdicts):
        sections.append("## Verdicts (primary endpoints)\n\n" + verdict_markdown(verdicts))
        save_figure(
            forest_plot(verdicts, f"{sweep_dir.name}: paired 95% intervals"),
            sweep_dir / "comparison_forest.png",
        )
    for axis, metric in (
        ("corruption", "accuracy"),
        ("attack", "accuracy"),
        ("ood", "auroc"),
        ("test", "test/acc"),
    ):
        if ((paired["axis"] == axis) & (paired["metric"] == metric)).any():
            table = level_markdown(frame, paired, axis, metric, baselines=axis == "corruption")
            sections.append(f"## {axis}: {metric}\n\n" + table)
    (sweep_dir / "comparison.md").write_text("\n".join(sections))
    curves = model_summary(
        frame[frame["axis"].isin(["corruption", "attack"]) & (frame["metric"] == "accuracy")]
    )
    if len(curves):
        plotted = {
            f"{recipe} {variant}".strip(): [
                {"corruption": r.kind, "severity": float(r.level), "accuracy": r.mean, "accuracy_std": r.std}
                for r in rows.itertuples()
            ]
            for (recipe, variant), rows in curves.groupby(["recipe", "variant"], sort=False)
        }
        units = {kind: f"eps ({spec.norm})" for kind, spec in ATTACKS.items()}
        units.update({f"{kind} masking check": f"eps ({spec.norm})" for kind, spec in ATTACKS.items()})
        figure = accuracy_plot(plotted, "Accuracy under corruption and attack (mean ± std over seeds)", units)
        save_figure(figure, sweep_dir / "comparison.png")
    log.info(f"comparison: {sweep_dir / 'comparison.md'}")
    return frame


class RobustnessComparison(Callback):
    """At the end of a sweep, compare_sweep grouped by `by`, each other value against `references`."""

    def __init__(
        self,
        by: str = "variant",
        references: list[str] | tuple[str, ...] = ("ablation",),
        treatments: list[str] | None = None,
    ) -> None:
        self.by, self.references = by, tuple(str(r) for r in references)
        self.treatments = tuple(str(t) for t in treatments) if treatments else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            try:
                compare_sweep(sweep_dir, self.by, self.references, self.treatments, only_present=True)
            except ConfigError as error:  # e.g. a robustness.json that names foreign data: refused, said once
                log.error(f"error: no comparison for {sweep_dir}: {' '.join(str(error).split())}")
