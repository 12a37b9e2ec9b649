"""What a finished (or failed) job leaves in its run directory: result.json, read by the sweep summary."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"


def write_result(
    output_dir: str | Path,
    status: str,
    overrides: list[str],
    metrics: dict[str, float],
    error: str | None = None,
) -> Path:
    """Write {status, overrides, metrics, error} as JSON (non-finite metrics as null)."""
    clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    path = Path(output_dir) / RESULT_FILE
    path.write_text(
        json.dumps({"status": status, "overrides": overrides, "metrics": clean, "error": error}, indent=2)
    )
    return path


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """Lightning's callback metrics (tensors) as plain floats."""
    return {key: float(value) for key, value in metrics.items()}


def read_result(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


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
