"""Committed results: what a comparison sweep measured, kept under results/<name>/ with the commit and the
command that made it, and the README's results tables rendered from those files (never typed in).

results/<name>/ holds
  comparison.csv    the sweep's comparison.csv (mean and std over seeds per model and corruption level);
  jobs.csv          one row per job: its overrides, status, test accuracy and number of test images;
  test_steps.csv    accuracy against the refinement steps used at test time (when the sweep dir has any);
  ood_comparison.csv  the sweep's OOD AUROC and FPR95 per model, OOD set and score (when its jobs ran any);
  provenance.json   command, commit (and whether the tree had uncommitted changes), date, machine, torch
                    version, seconds, and the sentinel job that tests/robustness/test_results.py reruns.
A README block between `<!-- results:<name>:<table> -->` and `<!-- end results -->` is replaced by
`render_readme`; a test holds the README to what the files render.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpn_lab.data.corruption import CORRUPTIONS
from dpn_lab.errors import ConfigError
from dpn_lab.robustness.compare import (
    LEVEL,
    OOD_LEVEL,
    REFERENCES,
    against,
    job_rows,
    reference_of,
)
from dpn_lab.robustness.evaluate import write_rows
from dpn_lab.runs.result import read_result

JOB_COLUMNS = ("job", "overrides", "status", "test_acc", "n_test")
STEPS_COLUMNS = ("model", "test_steps", "corruption", "severity", "accuracy", "accuracy_std", "n_seeds")
# README tables: name -> (metric, whether the calibration baselines get columns); `adversarial` is the
# accuracy table of the attack rows, `ood` the AUROC table of ood_comparison.csv, the others are of the
# corruption rows; `ood_scores` (see scores_table) and `test_steps` are tables of their own
TABLES = {
    "adversarial": ("accuracy", False),
    "ece": ("ece", False),
    "nll": ("nll", False),
    "accuracy": ("accuracy", True),
    "auroc_potential": ("auroc_potential", False),
    "auroc_msp": ("auroc_msp", False),
    "ood": ("auroc", False),
}
POTENTIAL_SCORES, OTHER_SCORES = ("phi_x0", "phi_xT"), ("msp", "energy", "mahalanobis")
BLOCK = re.compile(
    r"(<!-- results:(?P<name>[\w-]+):(?P<table>\w+) -->\n)(?P<body>.*?)(<!-- end results -->)", re.S
)


def _git(*args: str, cwd: Path) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _processor() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def job_table(sweep_dir: Path) -> list[dict[str, Any]]:
    """jobs.csv's rows: every numbered job directory of the sweep, in job order."""
    rows = []
    for job_dir in sorted((d for d in sweep_dir.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)):
        result = read_result(job_dir) or {"status": "failed", "overrides": [], "metrics": {}}
        meta_path = job_dir / "robustness.json"
        n_test = json.loads(meta_path.read_text())["rows"][0]["n"] if meta_path.is_file() else None
        rows.append(
            {
                "job": int(job_dir.name),
                "overrides": " ".join(result["overrides"]),
                "status": result["status"],
                "test_acc": result["metrics"].get("test/acc"),
                "n_test": n_test,
            }
        )
    return rows


def steps_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Accuracy against the steps used at test time (eval.test_steps), mean and std over the seeds of each
    refining model (an ablation's potential was never fitted: its rows would mean nothing)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for meta in job_rows(sweep_dir)[1]:
        path = Path(meta["path"]).parent / "test_steps.csv"
        if path.is_file() and _is_dpn(meta["label"]):
            for row in read_rows(path):
                groups[(meta["label"], row["test_steps"], row["corruption"], row["severity"])].append(
                    row["accuracy"]
                )
    return [
        {
            "model": model,
            "test_steps": int(steps),
            "corruption": kind,
            "severity": severity,
            "accuracy": statistics.fmean(values),
            "accuracy_std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n_seeds": len(values),
        }
        for (model, steps, kind, severity), values in groups.items()
    ]


def tree_state(root: Path) -> tuple[str, bool]:
    """(HEAD commit, whether src/ or conf/ have uncommitted changes): what a measurement ran on."""
    return _git("rev-parse", "HEAD", cwd=root), bool(
        _git("status", "--porcelain", "--", "src", "conf", cwd=root)
    )


def record(
    sweep_dir: Path,
    results_dir: Path,
    command: str,
    sentinel: str,
    seconds: float | None,
    tree: tuple[str, bool] | None = None,
) -> Path:
    """Copy a finished comparison sweep into results_dir (see the module docstring); returns results_dir.
    `tree` is the (commit, uncommitted changes) the sweep ran on, taken when it started (default: now)."""
    comparison = sweep_dir / "comparison.csv"
    if not comparison.is_file():
        raise ConfigError(
            f"{sweep_dir}: no comparison.csv (is it the directory of a finished comparison sweep?)"
        )
    jobs = job_table(sweep_dir)
    failed = [j["job"] for j in jobs if j["status"] != "ok"]
    if failed:
        raise ConfigError(
            f"{sweep_dir}: jobs {failed} did not finish; a result is recorded from complete sweeps only"
        )
    matches = [j for j in jobs if set(sentinel.split()) <= set(j["overrides"].split())]
    if len(matches) != 1:
        raise ConfigError(
            f"sentinel {sentinel!r} matches {len(matches)} jobs of {sweep_dir}; name exactly one"
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(comparison, results_dir / "comparison.csv")
    write_rows(jobs, results_dir / "jobs.csv", JOB_COLUMNS)
    steps = steps_summary(sweep_dir)
    if steps:
        write_rows(steps, results_dir / "test_steps.csv", STEPS_COLUMNS)
    if (sweep_dir / "ood_comparison.csv").is_file():
        shutil.copyfile(sweep_dir / "ood_comparison.csv", results_dir / "ood_comparison.csv")
    root = Path(__file__).resolve().parents[3]
    import torch  # only for its version: the record says what computed the numbers

    commit, dirty = tree or tree_state(root)
    provenance = {
        "command": command,
        "commit": commit,
        "uncommitted_changes": dirty,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{_processor()}, {os.cpu_count()} cores, {platform.system()}",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds,
        "sweep": str(sweep_dir),
        "sentinel": sentinel,
    }
    (results_dir / "provenance.json").write_text(json.dumps(provenance, indent=1) + "\n")
    return results_dir


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A results CSV with its numbers as floats (empty and NaN cells as NaN)."""

    def value(text: str) -> Any:
        try:
            return float(text) if text else float("nan")
        except ValueError:
            return text

    return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(path.open())]


def _recipe(label: str) -> str:
    """A DPN's label without what makes it the DPN (its variant or its number of steps); "DPN" where that
    is all the label says (a sweep of one recipe)."""
    own = label.removesuffix(" (no refinement)").split()
    recipe = " ".join(o for o in own if not o.startswith(("model.n_steps=", "variant=")))
    return recipe.removeprefix("recipe=") or "DPN"


def _is_dpn(label: str) -> bool:
    return reference_of(label, "ablation") is not None


def _level(values: tuple) -> str:
    return " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def recipe_table(
    summary: list[dict[str, Any]], metric: str, baselines: bool, keys: tuple[str, ...] = LEVEL
) -> str:
    """Rows: corruption level (or attack radius, or OOD set and score: `keys`); a column per recipe holding
    its references (the ablation, and the control where the sweep has one), the DPN, and the DPN minus each
    reference (* when larger than 2 std of either); the calibration baselines' columns when `baselines`."""
    cells = {(r["model"], *(r[k] for k in keys)): r for r in summary}
    labels = list(dict.fromkeys(r["model"] for r in summary))
    differences = {
        (reference, d["model"], *(d[k] for k in keys)): d
        for reference in REFERENCES
        for d in against(summary, reference, keys, (metric,))
    }
    dpns = [m for m in labels if _is_dpn(m)]
    matched = {dpn: [r for r in REFERENCES if reference_of(dpn, r) in labels] for dpn in dpns}
    references = {reference_of(dpn, r) for dpn in dpns for r in matched[dpn]}
    others = [m for m in labels if m not in dpns and m not in references]
    levels = list(dict.fromkeys(tuple(r[k] for k in keys) for r in summary))
    if metric.startswith(
        "auroc_"
    ):  # a separation score of corrupted from clean is undefined on the clean set
        levels = [level for level in levels if level[1] != 0]

    def number(row: dict | None) -> str:
        if row is None or row[metric] != row[metric]:
            return "–"
        marks = "".join(sorted(set(re.findall(r"\(([abc])\)", str(row.get("check") or "")))))
        return f"{row[metric]:.3f} ± {row[f'{metric}_std']:.3f}" + (f" [{marks}]" if marks else "")

    def difference(reference: str, dpn: str, level: tuple) -> str:
        d = differences.get((reference, dpn, *level))
        value = d.get(f"{metric}_diff") if d else None
        if value is None or value != value:
            return "–"
        return f"{value:+.3f}" + ("*" if d.get(f"{metric}_significant") else "")

    header = [
        f"({chr(97 + i)}) {_recipe(dpn)}: "
        + " / ".join([*matched[dpn], "DPN", *(f"DPN-{r}" for r in matched[dpn])])
        for i, dpn in enumerate(dpns)
    ]
    header += others if baselines else []
    names = {"ood_set": "OOD set"}
    lines = [f"| {' | '.join(names.get(k, k) for k in keys)} | " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * (len(keys) + len(header)))
    for level in levels:
        values = []
        for dpn in dpns:
            numbers = [number(cells.get((reference_of(dpn, r), *level))) for r in matched[dpn]]
            numbers.append(number(cells.get((dpn, *level))))
            numbers += [difference(r, dpn, level) for r in matched[dpn]]
            values.append(" / ".join(numbers))
        if baselines:
            values += [number(cells.get((m, *level))) for m in others]
        lines.append(f"| {_level(level)} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def scores_table(summary: list[dict[str, Any]]) -> str:
    """Rows: OOD set; a column per DPN (the references' potentials are never trained: an ablation's and a
    control's stay at their k-means start): the AUROC of -phi(x_0) and -phi(x_T), then the best of MSP,
    energy and Mahalanobis, named. A potential score is
    marked + when it beats that best by more than 2 std (the larger of the two), - when it loses by that."""
    cells = {(r["model"], r["ood_set"], r["score"]): r for r in summary}
    models = [m for m in dict.fromkeys(r["model"] for r in summary) if _is_dpn(m)]
    sets = list(dict.fromkeys(r["ood_set"] for r in summary))

    def cell(model: str, ood_set: str) -> str:
        others = [cells[(model, ood_set, s)] for s in OTHER_SCORES if (model, ood_set, s) in cells]
        best = max(others, key=lambda r: r["auroc"])
        parts = []
        for score in POTENTIAL_SCORES:
            r = cells[(model, ood_set, score)]
            margin = 2 * max(r["auroc_std"], best["auroc_std"])
            mark = (
                "+"
                if r["auroc"] - best["auroc"] > margin
                else "-"
                if best["auroc"] - r["auroc"] > margin
                else ""
            )
            parts.append(f"{r['auroc']:.3f} ± {r['auroc_std']:.3f}{mark}")
        return " / ".join([*parts, f"{best['score']} {best['auroc']:.3f} ± {best['auroc_std']:.3f}"])

    header = [
        f"({chr(97 + i)}) {_recipe(m)}: -phi(x_0) / -phi(x_T) / best other" for i, m in enumerate(models)
    ]
    lines = ["| OOD set | " + " | ".join(header) + " |", "|---|" + "---|" * len(models)]
    lines += [f"| {s} | " + " | ".join(cell(m, s) for m in models) + " |" for s in sets]
    return "\n".join(lines) + "\n"


def steps_table(rows: list[dict[str, Any]], kind: str = "gaussian") -> str:
    """Rows: (recipe, severity of `kind`); columns: the number of steps T at test; mean ± std over seeds."""
    rows = [r for r in rows if r["corruption"] == kind]
    steps = sorted({int(r["test_steps"]) for r in rows})
    cells = {(r["model"], r["severity"], int(r["test_steps"])): r for r in rows}
    levels = list(dict.fromkeys((r["model"], r["severity"]) for r in rows))
    lines = [f"| recipe (the DPN) | {kind} | " + " | ".join(f"T={t}" for t in steps) + " |"]
    lines.append("|---|---|" + "---|" * len(steps))
    for model, severity in levels:
        values = [cells[(model, severity, t)] for t in steps]
        lines.append(
            f"| {_recipe(model)} | {severity:g} | "
            + " | ".join(f"{v['accuracy']:.3f} ± {v['accuracy_std']:.3f}" for v in values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def provenance_line(results_dir: Path) -> str:
    p = json.loads((results_dir / "provenance.json").read_text())
    dirty = " plus uncommitted changes" if p["uncommitted_changes"] else ""
    took = f", {p['seconds'] / 60:.0f} min" if p.get("seconds") else ""
    return (
        f"Measured by `{p['command']}` on commit {p['commit'][:7]}{dirty}, {p['date'][:10]} ({p['machine']}, "
        f"torch {p['torch']}, {p['torch_threads']} threads{took}); files: `results/{results_dir.name}/`.\n"
    )


def render(results_dir: Path, table: str) -> str:
    """The markdown of one README block of a committed result."""
    if table == "provenance":
        return provenance_line(results_dir)
    if table == "test_steps":
        return steps_table(read_rows(results_dir / "test_steps.csv"))
    if table == "ood_scores":
        return scores_table(read_rows(results_dir / "ood_comparison.csv"))
    if table not in TABLES:
        raise ConfigError(
            f"README block {table!r}: no such table; the tables: provenance, test_steps, ood_scores, "
            f"{', '.join(TABLES)}"
        )
    metric, baselines = TABLES[table]
    if table == "ood":
        return recipe_table(read_rows(results_dir / "ood_comparison.csv"), metric, baselines, OOD_LEVEL)
    rows = read_rows(results_dir / "comparison.csv")
    attacks = table == "adversarial"
    return recipe_table(
        [r for r in rows if (r["corruption"] not in CORRUPTIONS) == attacks], metric, baselines
    )


def render_readme(text: str, results_root: Path) -> str:
    """`text` with every results block re-rendered from results_root/<name>/."""

    def block(match: re.Match) -> str:
        body = render(results_root / match["name"], match["table"])
        return f"{match.group(1)}{body}{match.group(5)}"

    return BLOCK.sub(block, text)
