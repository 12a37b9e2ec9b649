"""A comparison sweep killed part-way resumes: run again, it keeps the jobs that finished with the same code
and overrides, continues or reruns the rest (a job of other code is not kept: tests/runs/test_outcome.py),
and ends with the files of a sweep that was never stopped. The sweep that is killed runs as its own process;
the other two run inside the test process, which computes with the same pinned kernels (runs/cpu_kernels.py)."""

import json
import os
import signal

import pandas as pd
import pytest

from conftest import run_in_process, start_cli, wait_until

SWEEP = (
    "experiment=robustness_digits",
    "recipe=robust_extractor",
    "variant=ablation,dpn",
    "seed=0,1",
    "trainer.max_epochs=1",
    "eval.corruptions=[gaussian]",
    "eval.test_steps=null",
    "eval.attacks=[]",
    "eval.ood=[]",
)


def _finished(job) -> bool:
    path = job / "result.json"
    return path.is_file() and json.loads(path.read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_sweep_killed_between_jobs_resumes_to_the_same_comparison(tmp_path):
    reference, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    done = run_in_process("dpn_lab.train", *SWEEP, f"hydra.sweep.dir={reference}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    process = start_cli(*SWEEP, f"hydra.sweep.dir={resumed}", cwd=tmp_path)
    try:
        wait_until(lambda: _finished(resumed / "1"), 600, "job 1 of the sweep to finish")
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no handler runs: as a machine that dies
        process.communicate()
    assert not (resumed / "runs.csv").exists() and not _finished(resumed / "3")
    job0 = (resumed / "0" / "result.json").read_text()

    again = run_in_process("dpn_lab.train", *SWEEP, f"hydra.sweep.dir={resumed}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Keeping job 0" in again.stderr + again.stdout and "Keeping job 1" in again.stderr + again.stdout
    assert (resumed / "0" / "result.json").read_text() == job0  # kept, not rerun
    columns = ["job", "recipe", "variant", "seed", "split", "axis", "kind", "level", "metric", "value", "n"]
    expected = pd.read_csv(reference / "runs.csv")[columns]
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "runs.csv")[columns], expected)
    assert (resumed / "comparison.md").read_text() == (reference / "comparison.md").read_text()
