"""runs.csv: every number a sweep measured, one row per (job, axis, kind, level, metric), in long form.

The per-seed values are the stored truth of a comparison: tables, paired intervals and figures are derived
from them when rendered. Columns (RUN_COLUMNS):
  job      the job's number in the sweep (empty for a classical baseline, which belongs to a data split)
  recipe   the job's own overrides apart from the seed and the grouping key (`recipe=` shown as its value)
  variant  the value of the grouping key (`variant` in the committed comparisons: ablation, control, dpn);
           a baseline's name (logistic regression, RBF SVC) for the baselines
  seed     the run seed, which also draws the data split (the baselines: the seed of the split's jobs)
  split    the digest of the evaluated test indices (the same for every model of one seed)
  axis     test (result.json's metrics), corruption, attack, ood, or test_steps
  kind     the corruption, attack (its masking check as "<attack> masking check") or OOD set; for test, ""
  level    the severity or eps (as %g), the OOD score, or "" for test
  metric   e.g. accuracy, ece, auroc; a failed masking check of an attack row is the metric "check (a)" with
           value 1; test_steps rows are "accuracy at T=<steps>"
  value, n the number and how many test images it was measured on (empty where unknown)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dpn_lab.errors import ConfigError
from dpn_lab.robustness.evaluate import COLUMNS
from dpn_lab.runs.outcome import read_result

RUN_COLUMNS = ("job", "recipe", "variant", "seed", "split", "axis", "kind", "level", "metric", "value", "n")
SEED_KEYS = ("seed", "data.split_seed")  # what pairs the models of a comparison
# every number robustness_rows writes per level, but for its keys and its n
CORRUPTION_METRICS = tuple(c for c in COLUMNS if c not in ("corruption", "severity", "n"))


def _level(value: Any) -> str:
    return f"{float(value):g}"


def _overrides(result: dict[str, Any]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in result["overrides"] if "=" in o)


def finished_jobs(sweep_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(job directory, result.json) of every numbered job of a sweep, in job order; ConfigError when the
    directory holds no job (it is not a sweep)."""
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such directory (a sweep's directory holds its jobs 0/, 1/, ...)")
    dirs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
    if not dirs:
        raise ConfigError(f"{sweep_dir}: not a sweep directory (no numbered job directories 0/, 1/, ...)")
    return [(d, read_result(d) or {"status": "failed", "overrides": [], "metrics": {}}) for d in dirs]


def corruption_rows(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The long-form rows of one robustness row (a corruption level): one per defined metric."""
    base = {"axis": "corruption", "kind": row["corruption"], "level": _level(row["severity"]), "n": row["n"]}
    return [
        {**base, "metric": metric, "value": row[metric]}
        for metric in CORRUPTION_METRICS
        if row.get(metric, math.nan) == row.get(metric, math.nan)
    ]


def _rows_of_job(job_dir: Path) -> tuple[list[dict[str, Any]], str, float | None]:
    """(axis rows of one job's evaluation files, its test digest, the number of test images)."""
    meta_path = job_dir / "robustness.json"
    if not meta_path.is_file():
        return [], "", None
    meta = json.loads(meta_path.read_text())
    rows = [row for r in meta["rows"] for row in corruption_rows(r)]
    # compare imports this module: imported here, where it is used
    from dpn_lab.robustness.compare import attack_rows  # the strongest variant per (attack, eps)

    attacks = job_dir / "adversarial.csv"
    n_attacked = pd.read_csv(attacks)["n"].iloc[0] if attacks.is_file() else None
    for r in attack_rows(attacks):
        base = {"axis": "attack", "kind": r["corruption"], "level": _level(r["severity"]), "n": n_attacked}
        rows.append({**base, "metric": "accuracy", "value": r["accuracy"]})
        for mark in sorted({m for m in ("a", "b", "c") if f"({m})" in r["check"]}):
            rows.append({**base, "metric": f"check ({mark})", "value": 1.0})
    if (job_dir / "ood.csv").is_file():
        for r in pd.read_csv(job_dir / "ood.csv").to_dict("records"):
            for metric in ("auroc", "fpr95"):
                rows.append(
                    {
                        "axis": "ood",
                        "kind": r["ood_set"],
                        "level": r["score"],
                        "metric": metric,
                        "value": r[metric],
                        "n": r["n"],
                    }
                )
    if (job_dir / "test_steps.csv").is_file():
        for r in pd.read_csv(job_dir / "test_steps.csv").to_dict("records"):
            rows.append(
                {
                    "axis": "test_steps",
                    "kind": r["corruption"],
                    "level": _level(r["severity"]),
                    "metric": f"accuracy at T={int(r['test_steps'])}",
                    "value": r["accuracy"],
                    "n": meta["rows"][0]["n"],
                }
            )
    return rows, meta["test_index_digest"], meta["rows"][0]["n"]


def runs_frame(sweep_dir: Path, by: str = "variant", baselines: bool = True) -> pd.DataFrame:
    """The long-form table of a sweep (module docstring), the successful jobs only, `by` the grouping key.

    ConfigError, naming what is wrong, when a job failed or was not finished, or when `by` or the seed is
    not an override of every job. `baselines` adds the classical baselines, fitted on each job's split."""
    jobs = finished_jobs(sweep_dir)
    unfinished = [int(d.name) for d, result in jobs if result["status"] != "ok"]
    if unfinished:
        raise ConfigError(
            f"{sweep_dir}: jobs {unfinished} did not finish (status other than ok); rerun the sweep"
        )
    rows, metas = [], []
    for job_dir, result in jobs:
        overrides = _overrides(result)
        if by not in overrides:
            raise ConfigError(
                f"--by {by}: job {job_dir.name} has no override {by}= (its overrides: {' '.join(result['overrides'])})"
            )
        seed_key = next((k for k in SEED_KEYS if k in overrides), None)
        if seed_key is None:
            raise ConfigError(
                f"{sweep_dir}: job {job_dir.name} sets no seed= override: nothing pairs its models"
            )
        rest = [
            value if key == "recipe" else f"{key}={value}"
            for key, value in overrides.items()
            if key not in (by, *SEED_KEYS)
        ]
        job = {"job": int(job_dir.name), "variant": overrides[by], "seed": int(overrides[seed_key])}
        job["recipe"] = " ".join(rest)
        found, split, n = _rows_of_job(job_dir)
        job["split"] = split
        rows += [{**job, **row} for row in found]
        rows += [
            {**job, "axis": "test", "kind": "", "level": "", "metric": key, "value": value, "n": n}
            for key, value in result["metrics"].items()
            if key.startswith(("test/", "val/")) and value is not None
        ]
        if found:
            metas.append((job, job_dir))
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    if baselines and metas:
        frame = pd.concat([frame, baseline_frame(metas, frame.columns)], ignore_index=True)
    return varying_recipe(frame)


def varying_recipe(frame: pd.DataFrame) -> pd.DataFrame:
    """Recipe strings without the key=value overrides every job shares (e.g. experiment=...), as the sweep
    summary shows only what varied; a recipe's name stays."""
    parts = frame.loc[frame["job"].notna(), "recipe"].drop_duplicates().str.split()
    shared = {p for p in set.intersection(*map(set, parts)) if "=" in p} if len(parts) else set()
    frame["recipe"] = frame["recipe"].map(lambda r: " ".join(p for p in str(r).split() if p not in shared))
    return frame


def baseline_frame(metas: list[tuple[dict[str, Any], Path]], columns) -> pd.DataFrame:
    """The classical baselines (compare.BASELINES) on every distinct split, at the same corruption levels."""
    from dpn_lab.robustness.compare import baseline_rows  # compare imports this module

    by_path, seen = [], set()
    for job, job_dir in metas:
        if job["split"] not in seen:
            seen.add(job["split"])
            meta = json.loads((job_dir / "robustness.json").read_text())
            by_path.append((job, {**meta, "path": str(job_dir / "robustness.json")}))
    rows = []
    for job, meta in by_path:
        for r in baseline_rows([meta]):
            common = {
                "job": None,
                "recipe": "",
                "variant": r["model"],
                "seed": job["seed"],
                "split": job["split"],
            }
            rows += [{**common, **row} for row in corruption_rows(r)]
    return pd.DataFrame(rows, columns=columns)


def write_runs(frame: pd.DataFrame, path: Path, **options) -> None:
    """runs.csv (RUN_COLUMNS; values to 8 significant digits, all a float32 holds)."""
    frame.to_csv(path, index=False, columns=list(RUN_COLUMNS), float_format="%.8g", **options)


def read_runs(path: Path) -> pd.DataFrame:
    """runs.csv as written (levels and recipes as text, the job as a nullable integer)."""
    frame = pd.read_csv(
        path,
        dtype={"recipe": str, "variant": str, "split": str, "kind": str, "level": str},
        keep_default_na=False,
        na_values={"value": [""], "n": [""], "job": [""]},
    )
    frame["job"] = frame["job"].astype("Int64")
    return frame
