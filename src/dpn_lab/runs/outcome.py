"""What a finished (or failed) job leaves in its run directory: result.json, read by the sweep summary, and
by a sweep run again, which keeps the jobs that already finished with the same code and overrides."""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
PACKAGE = Path(__file__).resolve().parents[1]


@cache
def code_digest() -> str:
    """A fingerprint of the package's code and configs (every .py and .yaml under dpn_lab/): two jobs with
    the same digest and overrides computed the same thing."""
    digest = hashlib.sha256()
    for path in sorted(p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".yaml")):
        digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def write_result(
    output_dir: str | Path,
    status: str,
    overrides: list[str],
    metrics: dict[str, float],
    error: str | None = None,
) -> Path:
    """Write {status, overrides, metrics, error, code} as JSON (non-finite metrics as null)."""
    clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    path = Path(output_dir) / RESULT_FILE
    record = {
        "status": status,
        "overrides": overrides,
        "metrics": clean,
        "error": error,
        "code": code_digest(),
    }
    path.write_text(json.dumps(record, indent=2))
    return path


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's callback metrics (tensors) as plain floats."""
    return {key: float(value) for key, value in metrics.items()}


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def same_job(result: Any, overrides: list[str]) -> bool:
    """Whether an earlier result.json of this run directory was written by a job with these overrides and
    this code (then a sweep run again may keep it, or continue it from its last checkpoint)."""
    return (
        isinstance(result, dict)
        and result.get("overrides") == overrides
        and result.get("code") == code_digest()
    )


def earlier_result(run_dir: Path) -> dict[str, Any] | None:
    """result.json of a run directory, or None where there is none or it cannot be read."""
    try:
        return read_result(run_dir)
    except (OSError, ValueError):
        return None


def format_summary(
    command: str, metrics: dict[str, float], output_dir: str | Path, best_ckpt: str | None
) -> str:
    """The final report a command (train, eval, analyze) prints."""
    lines = ["", "=" * 60, f"dpn_lab.{command} summary"]
    for key in sorted(k for k in metrics if k.startswith(("test/", "val/"))):
        lines.append(f"  {key:<22} {metrics[key]:.4f}")
    lines.append(f"  run directory          {output_dir}")
    if best_ckpt:
        lines.append(f"  best checkpoint        {best_ckpt}")
    lines.append("=" * 60)
    return "\n".join(lines)
