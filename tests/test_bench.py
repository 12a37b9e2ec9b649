"""The benchmarks run (their figures are read by people, not asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test takes more than ~2 s

ROOT = Path(__file__).resolve().parents[1]


def test_refinement_benchmark_runs_and_prints_every_row():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "refinement.py"),
            "--batch",
            "8",
            "--dim",
            "4",
            "--components",
            "3",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--no-compile",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith(("autograd ", "closed_form "))]
    assert len(rows) == 6, result.stdout
    # the reference row compares with itself: zero gradient error, ratio 1
    assert rows[0].split()[-2:] == ["0.00e+00", "1.0000"]


def test_lightning_overhead_benchmark_runs():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "lightning_overhead.py"),
            "--extractor",
            "mlp",
            "--epochs",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    ratio = [line for line in result.stdout.splitlines() if line.startswith("ratio")]
    assert len(ratio) == 1 and float(ratio[0].split()[1].rstrip("x")) > 0
