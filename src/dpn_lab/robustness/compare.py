"""RobustnessComparison: one table and one plot for a sweep, mean +- std over seeds, with sklearn baselines.

A Hydra callback for the robustness experiments. Each job of the sweep has written robustness.csv and
robustness.json (its data config and a digest of its test indices), and adversarial.csv and ood.csv when it
ran attacks and OOD sets. At the end of the sweep, jobs that differ only in `seed` are grouped into one model;
the calibration baselines (logistic regression, RBF SVC) are fitted on each job's exact training split and
evaluated on the same test indices and the same corrupted copies. Corruption and attack rows are keyed by
(corruption, severity) in comparison.csv; OOD rows by (ood_set, score) in ood_comparison.csv.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError
from dpn_lab.robustness.attacks import ATTACKS
from dpn_lab.robustness.evaluate import index_digest, robustness_rows, write_rows
from dpn_lab.runs.result import read_result
from dpn_lab.runs.sweep_summary import split_overrides
from dpn_lab.viz.plots import accuracy_plot, save_figure

log = logging.getLogger(__name__)
BASELINES = {
    "logistic regression": lambda: LogisticRegression(max_iter=3000, C=1.0),
    "RBF SVC": lambda: SVC(kernel="rbf", C=10.0, gamma="scale"),
}
METRICS = ("accuracy", "auroc_potential", "auroc_msp", "acc90_potential", "acc90_msp", "ece", "nll", "brier")
DIFFERENCES = ("accuracy", "auroc_potential", "acc90_potential", "ece", "nll")  # DPN minus its references
LEVEL = ("corruption", "severity")  # what a corruption or attack row is keyed by
OOD_LEVEL, OOD_METRICS = ("ood_set", "score"), ("auroc", "fpr95")
COMPARISON_COLUMNS = (
    "model",
    *LEVEL,
    *(column for metric in METRICS for column in (metric, f"{metric}_std")),
    "n_seeds",
    "test_sets",
    "check",
)
OOD_COMPARISON_COLUMNS = (
    "model",
    *OOD_LEVEL,
    *(column for metric in OOD_METRICS for column in (metric, f"{metric}_std")),
    "n_seeds",
    "test_sets",
)


def model_label(own_overrides: list[str]) -> str:
    """A job's model: the overrides that set it apart in the sweep, without the seed (n_steps=0 is called
    out as the ablation)."""
    own = [o for o in own_overrides if not o.startswith(("seed=", "data.split_seed="))]
    label = " ".join(own) or "DPN"
    return label + (" (no refinement)" if "model.n_steps=0" in own else "")


def job_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(corruption and attack rows of every successful job, tagged with model and test digest; each job's
    metadata)."""
    rows, jobs, finished = [], [], []
    for job_dir in sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    ):
        result, meta_path = read_result(job_dir), job_dir / "robustness.json"
        if result and result["status"] == "ok" and meta_path.is_file():
            finished.append((result, {**json.loads(meta_path.read_text()), "path": str(meta_path)}))
    _, own = split_overrides([result["overrides"] for result, _ in finished])
    for (_, meta), own_overrides in zip(finished, own, strict=True):
        meta["label"] = model_label(own_overrides)
        jobs.append(meta)
        rows += [
            {**row, "model": meta["label"], "test_set": meta["test_index_digest"]} for row in meta["rows"]
        ]
        tagged = {"model": meta["label"], "test_set": meta["test_index_digest"]}
        rows += [{**row, **tagged} for row in attack_rows(Path(meta["path"]).parent / "adversarial.csv")]
    return rows, jobs


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


def ood_job_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every job's ood.csv rows, tagged with its model and test digest."""
    rows = []
    for meta in jobs:
        path = Path(meta["path"]).parent / "ood.csv"
        if path.is_file():
            tagged = {"model": meta["label"], "test_set": meta["test_index_digest"]}
            rows += [
                {**row, **{m: float(row[m]) for m in OOD_METRICS}, **tagged}
                for row in csv.DictReader(path.open())
            ]
    return rows


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


def aggregate(
    rows: list[dict[str, Any]], keys: tuple[str, ...] = LEVEL, metrics: tuple[str, ...] = METRICS
) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of every `metrics` column per (model, *keys), in first-seen order
    (NaN where a model does not define the metric)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["model"], *(row[k] for k in keys))].append(row)
    out = []
    for (model, *level), members in groups.items():
        row = {"model": model, **dict(zip(keys, level, strict=True)), "n_seeds": len(members)}
        for metric in metrics:
            values = [float(m.get(metric, math.nan)) for m in members]
            defined = not any(math.isnan(v) for v in values)  # statistics' exact arithmetic rejects NaN
            row[metric] = statistics.fmean(values) if defined else math.nan
            row[f"{metric}_std"] = (
                (statistics.stdev(values) if len(values) > 1 else 0.0) if defined else math.nan
            )
        row["test_sets"] = " ".join(sorted({m["test_set"] for m in members}))
        marked = [m["check"] for m in members if m.get("check")]
        row["check"] = f"{len(marked)} of {len(members)} seeds: {marked[0]}" if marked else ""
        out.append(row)
    return out


def pivot_markdown(summary: list[dict[str, Any]]) -> str:
    """Rows: corruption and severity; columns: models; cells: mean +- std of test accuracy."""
    models = list(dict.fromkeys(r["model"] for r in summary))
    cells = {(r["corruption"], r["severity"], r["model"]): r for r in summary}
    levels = list(dict.fromkeys((r["corruption"], r["severity"]) for r in summary))
    lines = ["| corruption | severity | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for kind, severity in levels:
        values = []
        for model in models:
            r = cells.get((kind, severity, model))
            values.append(f"{r['accuracy']:.3f} ± {r['accuracy_std']:.3f}" if r else "")
        lines.append(f"| {kind} | {severity:g} | " + " | ".join(values) + " |")
    n = max(r["n_seeds"] for r in summary)
    return (
        "\n".join(lines)
        + f"\n\nTest accuracy, mean ± sample std over {n} seeds (training seed and data split).\n"
    )


REFERENCES = ("ablation", "control")  # what a DPN is compared against


def reference_of(label: str, reference: str) -> str | None:
    """The label of a DPN's matched `reference` (ablation or control): the same overrides with
    variant=ablation / variant=control, or, in sweeps over model.n_steps, the ablation with n_steps=0.
    None for a label that is itself a reference or names no DPN."""
    if "variant=dpn" in label.split():
        return label.replace("variant=dpn", f"variant={reference}")
    match = re.search(r"model\.n_steps=(\d+)", label)
    if reference != "ablation" or not match or match.group(1) == "0":
        return None
    return model_label(label.replace(match.group(0), "model.n_steps=0").split())


def against(
    summary: list[dict[str, Any]],
    reference: str = "ablation",
    keys: tuple[str, ...] = LEVEL,
    metrics: tuple[str, ...] = DIFFERENCES,
) -> list[dict[str, Any]]:
    """For each DPN and level (`keys`): DPN minus its matched reference (the ablation or the control) for
    each of `metrics`, and whether the difference exceeds 2x the larger of the two standard deviations
    (`significant`)."""
    cells = {(r["model"], *(r[k] for k in keys)): r for r in summary}
    out = []
    for r in summary:
        matched = reference_of(r["model"], reference)
        base = cells.get((matched, *(r[k] for k in keys))) if matched else None
        if base is None:
            continue
        row = {"model": r["model"], **{k: r[k] for k in keys}}
        for metric in metrics:
            difference = r.get(metric, math.nan) - base.get(metric, math.nan)
            row[f"{metric}_diff"] = difference
            row[f"{metric}_significant"] = abs(difference) > 2 * max(
                r.get(f"{metric}_std", math.nan), base.get(f"{metric}_std", math.nan)
            )
        out.append(row)
    return out


def ablation_markdown(differences: list[dict[str, Any]]) -> str:
    """DPN minus ablation per level; * marks a difference larger than 2 std (the larger of the two)."""

    def cell(row: dict, metric: str) -> str:
        value = row[f"{metric}_diff"]
        if value != value:
            return "–"
        return f"{value:+.3f}" + ("*" if row[f"{metric}_significant"] else "")

    lines = [
        "| model | corruption | severity | accuracy | AUROC of -phi(x_0) | accuracy at 90% coverage (phi) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['corruption']} | {r['severity']:g} | {cell(r, 'accuracy')} | "
        f"{cell(r, 'auroc_potential')} | {cell(r, 'acc90_potential')} |"
        for r in differences
    ]
    marked = sum(
        r[f"{m}_significant"] for r in differences for m in ("accuracy", "auroc_potential", "acc90_potential")
    )
    return (
        "\n".join(lines)
        + f"\n\nDPN minus its matched ablation (model.n_steps=0), mean over seeds; * = |difference| > 2 std "
        f"(the larger of the two). {marked} marked difference(s).\n"
    )


def compare_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write comparison.csv, comparison.md and comparison.png into the sweep directory."""
    rows, jobs = job_rows(sweep_dir)
    if not rows:
        log.warning(f"no job of {sweep_dir} wrote robustness results: nothing to compare")
        return []
    summary = aggregate(rows + baseline_rows(jobs))
    write_rows(summary, sweep_dir / "comparison.csv", COMPARISON_COLUMNS)
    differences = against(summary, "ablation")
    for reference in REFERENCES:
        found = against(summary, reference)
        write_rows(found, sweep_dir / f"comparison_vs_{reference}.csv", list(found[0]) if found else [])
    (sweep_dir / "comparison.md").write_text(
        pivot_markdown(summary) + ("\n" + ablation_markdown(differences) if differences else "")
    )
    ood = aggregate(ood_job_rows(jobs), OOD_LEVEL, OOD_METRICS)
    if ood:
        write_rows(ood, sweep_dir / "ood_comparison.csv", OOD_COMPARISON_COLUMNS)
        for reference in REFERENCES:
            found = against(ood, reference, OOD_LEVEL, OOD_METRICS)
            write_rows(found, sweep_dir / f"ood_vs_{reference}.csv", list(found[0]) if found else [])
    curves = defaultdict(list)
    for row in summary:
        curves[row["model"]].append(row)
    units = {kind: f"eps ({spec.norm})" for kind, spec in ATTACKS.items()}
    units.update({f"{kind} masking check": f"eps ({spec.norm})" for kind, spec in ATTACKS.items()})
    figure = accuracy_plot(curves, "Accuracy under corruption and attack (mean ± std over seeds)", units)
    save_figure(figure, sweep_dir / "comparison.png")
    log.info(f"robustness comparison: {sweep_dir / 'comparison.md'}")
    return summary


class RobustnessComparison(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            try:
                compare_sweep(sweep_dir)
            except ConfigError as error:  # e.g. a robustness.json that names foreign data: refused, said once
                log.error(f"error: no comparison for {sweep_dir}: {' '.join(str(error).split())}")
