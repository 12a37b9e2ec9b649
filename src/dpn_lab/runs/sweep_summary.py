"""SweepSummary: a Hydra callback that tabulates every job of a multirun (overrides -> metrics)."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dpn_lab.runs.outcome import read_result

log = logging.getLogger(__name__)
METRICS = ("test/acc", "test/loss", "val/acc_best", "test/potential_gain")


def split_overrides(all_overrides: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """(overrides every job shares, each job's own): the table shows only what the sweep varied."""
    common = [o for o in all_overrides[0] if all(o in job for job in all_overrides)] if all_overrides else []
    return common, [[o for o in job if o not in common] or job for job in all_overrides]


def summarize_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory (job order), overrides -> status and metrics; writes summary.csv/.md."""
    job_dirs = sorted(
        (d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name)
    )
    killed = {"status": "failed", "overrides": [], "metrics": {}, "error": "no result.json (job killed?)"}
    results = [read_result(job_dir) or killed for job_dir in job_dirs]
    common, varied = split_overrides([r["overrides"] for r in results])
    rows = [
        {
            "job": job_dir.name,
            "overrides": " ".join(own),
            "status": "killed" if result["status"] == "running" else result["status"],
            **{m: result["metrics"].get(m) for m in METRICS},
            "error": result.get("error") or "",
        }
        for job_dir, result, own in zip(job_dirs, results, varied, strict=True)
    ]
    columns = ["job", "overrides", "status", *METRICS, "error"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

    table = [f"Sweep {sweep_dir.name}; every job: {' '.join(common) or '(no shared overrides)'}", ""]
    table += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(cell(row[c]).replace("|", "/") for c in columns) + " |" for row in rows]
    (sweep_dir / "summary.md").write_text("\n".join(table) + "\n")
    return rows


@dataclass(frozen=True)
class SweepOutcome:
    total: int
    failed: int
    table: Path


last_sweep: SweepOutcome | None = None  # read by the command after the sweep: any failed job exits 1


class SweepSummary(Callback):
    """Prints the summary table (status and error of every job) at the end of every sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = summarize_sweep(sweep_dir)
            failed = sum(row["status"] != "ok" for row in rows)
            last_sweep = SweepOutcome(len(rows), failed, sweep_dir / "summary.md")
            print((sweep_dir / "summary.md").read_text())
            log.info(f"sweep summary of {len(rows)} jobs ({failed} failed): {sweep_dir / 'summary.md'}")
