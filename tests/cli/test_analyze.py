"""`python -m dpn_lab.analyze`: every figure and a summary of a trained checkpoint."""

import matplotlib.image
import pytest

from conftest import run_in_process
from dpn_lab.viz.plots import FIGURE_KINDS


@pytest.mark.slow
def test_analyze_writes_every_figure_and_a_summary(trained_run, tmp_path):
    result = run_in_process("dpn_lab.analyze", f"ckpt_path={trained_run.last}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "analyze" / "runs").iterdir()
    for kind in FIGURE_KINDS:
        assert matplotlib.image.imread(run / "figures" / f"{kind}_final.png")[..., :3].std() > 0.05
    summary = (run / "summary.md").read_text()
    assert "K=16 components" in summary
    assert summary.count("\n| potential/") == 6 + 6 + 1  # six diagnostics, acc_step_0..5, acc_responsibility
    components = summary.split("| component |")[1]
    assert components.count("\n| ") == 16  # one row per component
    assert "test accuracy:" in summary and "step sizes eta_t" in summary
