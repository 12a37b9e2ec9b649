"""Signals, broken output and bugs at the command line: one line, the right exit status, nothing lost."""

import json
import re
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import QUICK, helpers_env, no_process_mentions, run_cli, run_in_process, start_cli, wait_until
from dpn_lab.checkpoints import read_checkpoint

pytestmark = pytest.mark.slow

FAST = ["logger=csv", *QUICK]


def mid_epoch(cwd: Path) -> list[str]:
    """Arguments that make a run touch cwd/mid_epoch at batch 3 of epoch 1 (after epoch 0's last.ckpt)."""
    return ["+callbacks.marker._target_=markers.TouchAtBatch", f"+callbacks.marker.path={cwd / 'mid_epoch'}"]


def interrupt_mid_run(process: subprocess.Popen, cwd: Path, signum: int) -> tuple[Path, float, str, str]:
    wait_until(lambda: (cwd / "mid_epoch").exists(), 120, "batch 3 of epoch 1")
    (last,) = (cwd / "outputs").glob("train/runs/*/checkpoints/last.ckpt")
    signalled = time.time()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert time.time() - signalled < 60
    return last, signalled, stdout, stderr


def test_ctrl_c_saves_a_mid_epoch_checkpoint_and_exits_130(tmp_path):
    process = start_cli(
        "trainer.max_epochs=200", *FAST, *mid_epoch(tmp_path), cwd=tmp_path, env=helpers_env()
    )
    last, signalled, _, stderr = interrupt_mid_run(process, tmp_path, signal.SIGINT)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"error: stopped by SIGINT (Ctrl-C): {last} is saved, resume with ckpt_path=last"
    )
    assert last.stat().st_mtime >= signalled
    state = read_checkpoint(str(last))
    progress = state["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert state["epoch"] < 199 and progress["current"]["processed"] > 0 and not progress["is_last_batch"]
    result = json.loads((last.parents[1] / "result.json").read_text())
    assert result["status"] == "interrupted" and "SIGINT" in result["error"]


def test_sigterm_to_rank_0_under_ddp_stops_every_rank_with_a_checkpoint(tmp_path):
    process = start_cli(
        "trainer=ddp_sim",
        "trainer.max_epochs=200",
        *FAST,
        *mid_epoch(tmp_path),
        cwd=tmp_path,
        env=helpers_env(),
    )
    last, signalled, stdout, stderr = interrupt_mid_run(process, tmp_path, signal.SIGTERM)
    assert process.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith(f"error: stopped by SIGTERM: {last} is saved")
    assert last.stat().st_mtime >= signalled
    assert json.loads((last.parents[1] / "result.json").read_text())["status"] == "preempted"
    wait_until(lambda: no_process_mentions(str(tmp_path)), 10, "every rank has ended")
    # the CPU fallback is said once, and rank 1 does not repeat rank 0's log
    fallback = re.findall(
        r"trainer.devices=2 without a GPU \(none requested\): 2 CPU processes", stderr + stdout
    )
    assert len(fallback) == 1
    assert (stdout + stderr).count("Building data") == 1


def test_an_unwritable_stdout_and_an_ascii_terminal_do_not_lose_the_run(tmp_path):
    with open("/dev/full", "w") as full:
        result = run_cli("dpn_lab.train", "trainer.max_epochs=1", *FAST, cwd=tmp_path, stdout=full)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: OSError: standard output could not be written (No space left on device); "
        "the run finished and its files are complete"
    )
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert json.loads((run / "result.json").read_text())["status"] == "ok"

    ascii_run = run_in_process("dpn_lab.train", "trainer.max_epochs=1", *FAST, cwd=tmp_path, encoding="ascii")
    assert ascii_run.returncode == 0, ascii_run.stderr[-2000:]
    assert "dpn_lab.train summary" in ascii_run.stdout and "test/acc" in ascii_run.stdout


def test_a_bug_is_one_line_with_its_traceback_in_the_run_directory(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "trainer.max_epochs=1",
        *FAST,
        "+callbacks.fail._target_=failing_rank.FailOnRank",
        "+callbacks.fail.rank=0",
        cwd=tmp_path,
        env=helpers_env(),
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert result.stderr.strip().splitlines()[-1] == (
        "error: RuntimeError: rank 0 failed on purpose (an unexpected error: traceback in "
        f"{run / 'traceback.txt'})"
    )
    assert "raise RuntimeError" in (run / "traceback.txt").read_text()
    assert json.loads((run / "result.json").read_text())["status"] == "failed"


def test_a_full_disk_mid_run_is_one_line(tmp_path):
    def small_files() -> None:  # a file may not grow past 64 KiB: checkpoints fail, configs and logs fit
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    result = run_cli("dpn_lab.train", "trainer.max_epochs=2", *FAST, cwd=tmp_path, preexec_fn=small_files)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: OSError: [Errno 27] File too large")
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    assert json.loads((run / "result.json").read_text())["status"] == "failed"
    assert not list(run.rglob("*.ckpt"))  # no half-written checkpoint is left to be resumed from
