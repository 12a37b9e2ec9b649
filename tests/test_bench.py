"""The benchmarks run (their figures are read by people, not asserted)."""

import os
import runpy
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch

pytestmark = pytest.mark.slow  # each test takes more than ~2 s

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, capsys) -> str:
    """What `python bench/<script> args` prints, run in this process (the imports are paid once per suite,
    not once per benchmark: ~5 s each)."""
    with patch.object(sys, "argv", [script, *args]):
        runpy.run_path(str(ROOT / "bench" / script), run_name="__main__")
    return capsys.readouterr().out


def test_refinement_benchmark_prints_its_three_tables_and_the_plot(tmp_path, capsys):
    plot = tmp_path / "growth.png"
    out = run_bench(
        "refinement.py",
        *("--batch", "8", "--dim", "4", "--components", "3", "--steps", "2", "--repeats", "1"),
        "--no-compile",
        *("--plot", str(plot)),
        capsys=capsys,
    )
    assert out.startswith("refinement benchmark on cpu: ") and f"torch {torch.__version__}" in out
    for title in ("1. forward+backward", "2. one forward step", "3. how the cost grows"):
        assert title in out
    lean = next(line for line in out.splitlines() if line.startswith("autograd (lean) "))
    assert lean.split()[-3] == "1.00x" and lean.split()[-1] == "0.0e+00"  # compared with itself
    fused = next(line for line in out.splitlines() if line.startswith("closed_form fused "))
    assert float(fused.split()[-1]) < 1e-5  # exact gradients
    assert len([line for line in out.splitlines() if line.startswith("B=")]) == 5
    assert plot.stat().st_size > 1000


def test_lightning_overhead_benchmark_prints_both_loops_and_their_ratio(capsys):
    out = run_bench(
        "lightning_overhead.py", "--extractor", "mlp", "--epochs", "2", "--rounds", "2", capsys=capsys
    )
    rows = {
        line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("plain", "Lightning "))
    }
    assert rows["plain"][-1] == "1.000x" and float(rows["Lightning"][-1].rstrip("x")) > 0


def test_throughput_benchmark_prints_images_per_second(capsys):
    out = run_bench(
        "throughput.py",
        *("--steps", "2", "--warmup", "1", "--batch-size", "16", "--configs", "digits", "cifar10"),
        capsys=capsys,
    )
    rows = [line.split() for line in out.splitlines() if line.startswith(("digits", "cifar10"))]
    assert [r[:2] for r in rows] == [["digits", "1x8x8"], ["cifar10", "3x32x32"]]
    assert all(float(r[2]) > 0 for r in rows)


def test_evaluation_memory_benchmark_prints_both_phases(capsys):
    lines = run_bench("evaluation_memory.py", "--images", "300", capsys=capsys).splitlines()
    assert lines[0].startswith("evaluation memory on ") and "300 test images 1x28x28" in lines[0]
    rows = [line.split(" | ") for line in lines if line.startswith(("| calibration", "| OOD"))]
    assert len(rows) == 2 and all(float(r[1]) > 0 and float(r[2].rstrip(" |")) >= 0 for r in rows)


def test_the_gpu_check_stops_at_once_without_a_cuda_device(tmp_path):
    """bench/gpu_check.sh needs a GPU (README, Real scale); here it must fail fast and say why, not train."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: run bench/gpu_check.sh itself")
    result = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "AssertionError: no CUDA device" in result.stderr and "==" not in result.stdout
    assert list(tmp_path.iterdir()) == []
