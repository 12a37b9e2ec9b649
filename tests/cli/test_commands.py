"""The command lines as researchers use them: train, eval, resume, DDP, multirun, errors. What a command
does runs in-process (run_in_process, the same __main__ path); what needs a process of its own (DDP,
launchers, a fresh interpreter's one line) runs as one (run_cli)."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import QUICK, run_cli, run_in_process
from dpn_lab.config import MONITORABLE

pytestmark = pytest.mark.slow


def only(paths):
    paths = list(paths)
    assert len(paths) == 1, paths
    return paths[0]


def read_metrics_csv(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_train_then_eval_agree_and_leave_a_complete_run_directory(trained_run, tmp_path):
    result, run_dir = trained_run.result, trained_run.run_dir
    assert "dpn_lab.train summary" in result.stdout and "test/acc" in result.stdout
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["status"] == "ok" and 0 < saved["metrics"]["test/acc"] <= 1
    assert (run_dir / ".hydra" / "config.yaml").is_file() and trained_run.last.is_file()
    rows = read_metrics_csv(run_dir)
    assert {row["epoch"] for row in rows if row.get("val/acc")} == {"0", "1"}
    assert set(MONITORABLE) <= set(rows[0])  # what callbacks.*.monitor may name is really logged
    output = result.stdout + result.stderr
    for noise in ("💡 Tip", "LeafSpec", "Total FLOPs: 0", "Seed set to", "sync_dist", "Traceback"):
        assert noise not in output, noise
    # checkpoints are plain data
    checkpoint = torch.load(trained_run.best, weights_only=True)
    assert checkpoint["hyper_parameters"]["n_components"] == 16

    evaluated = run_in_process("dpn_lab.eval", f"ckpt_path={trained_run.best}", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "dpn_lab.eval summary" in evaluated.stdout and "dpn_lab.train" not in evaluated.stdout
    eval_dir = only((tmp_path / "outputs" / "eval" / "runs").iterdir())
    eval_metrics = json.loads((eval_dir / "result.json").read_text())["metrics"]
    assert eval_metrics["test/acc"] == pytest.approx(saved["metrics"]["test/acc"], abs=1e-6)


def test_resume_last_continues_at_the_right_epoch(trained_run, tmp_path):
    runs = tmp_path / "outputs" / "train" / "runs"
    shutil.copytree(trained_run.run_dir, runs / trained_run.run_dir.name)  # a 2-epoch run, test included
    # a run made before the package moved into subpackages names the old module paths
    (saved,) = runs.glob("*/.hydra/config.yaml")
    old_paths = saved.read_text().replace("dpn_lab.model.lit_module.", "dpn_lab.lit_module.")
    saved.write_text(old_paths.replace("dpn_lab.callbacks.kmeans_init.", "dpn_lab.kmeans_init."))
    assert "_target_: dpn_lab.lit_module.DPNLitModule" in saved.read_text()
    resumed = run_in_process(
        "dpn_lab.train", "trainer.max_epochs=4", "ckpt_path=last", "robustness@eval=none", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(runs.iterdir())) == 2
    second = next(
        r for r in runs.iterdir() if "ckpt_path=last" in (r / ".hydra" / "overrides.yaml").read_text()
    )
    first = next(r for r in runs.iterdir() if r != second)
    epochs = {row["epoch"] for row in read_metrics_csv(second) if row.get("val/acc")}
    assert epochs == {"2", "3"}
    # the resumed run keeps writing checkpoints where the first one did
    assert not (second / "checkpoints").exists()
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    # another model is another experiment: nothing to resume
    other = run_in_process("dpn_lab.train", "ckpt_path=last", "model.n_components=4", cwd=tmp_path)
    assert other.returncode == 1 and "ckpt_path=last: no earlier run of this data+model+seed" in other.stderr


def test_ddp_with_two_cpu_processes_ends_with_identical_parameters(tmp_path):
    result = run_cli(
        "dpn_lab.train", "trainer=ddp_sim", "trainer.max_epochs=2", "logger=none", *QUICK, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only((tmp_path / "outputs" / "train" / "runs").iterdir())
    checksums = json.loads((run_dir / "rank_checksums.json").read_text())
    # after KMeansInit (train start) and after training: one value per rank, equal across ranks
    for moment in ("train_start", "fit_end"):
        assert len(checksums[moment]) == 2 and checksums[moment][0] == checksums[moment][1]
    assert checksums["train_start"] != checksums["fit_end"]
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"


def test_multirun_writes_a_summary_and_records_failed_jobs(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "-m",
        "model.n_steps=0,2",
        "model.n_components=4,5000",
        "trainer.max_epochs=1",
        "logger=none",
        *QUICK,
        cwd=tmp_path,
    )
    # a sweep with failed jobs exits 1 after its summary table, which is printed
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: SweepFailed: 2 of 4 jobs failed")
    assert "| job | overrides | status |" in result.stdout and "Traceback" not in result.stderr
    sweep = only((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len({r["job"] for r in rows}) == 4
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["overrides"] for r in ok} == {
        "model.n_steps=0 model.n_components=4",
        "model.n_steps=2 model.n_components=4",
    }
    assert all(0 < float(r["test/acc"]) <= 1 for r in ok)
    assert len(failed) == 2 and all("model.n_components=5000 is out of range" in r["error"] for r in failed)
    assert "| job | overrides | status |" in (sweep / "summary.md").read_text()


def test_multirun_with_several_devices_per_job_says_what_to_use(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "-m",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )
    sweep = only((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    error = json.loads((sweep / "0" / "result.json").read_text())["error"]
    assert "use trainer.strategy=ddp_spawn, or hydra/launcher=submitit_slurm" in error, result.stderr


def test_a_bad_value_is_one_line_and_exit_1(tmp_path):
    result = run_cli("dpn_lab.train", "model.covariance=dense", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ConfigError: model.covariance='dense' is not allowed; choose one of: full, diag, spherical, lowrank"
    )


def sweep_rows(tmp_path: Path) -> list[dict[str, str]]:
    sweep = only((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_optuna_search_runs_trials(tmp_path):
    result = run_in_process(
        "dpn_lab.train",
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "logger=none",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = sweep_rows(tmp_path)
    assert len(rows) == 2 and all(
        r["status"] == "ok" and "model.n_components=" in r["overrides"] for r in rows
    )
    sweep = only((tmp_path / "outputs" / "train" / "multiruns").iterdir())
    assert "best_value" in (sweep / "optimization_results.yaml").read_text()


def test_multirun_job_with_two_devices_runs_with_ddp_spawn(tmp_path):
    result = run_cli(
        "dpn_lab.train",
        "-m",
        "trainer=ddp_sim",
        "trainer.strategy=ddp_spawn",
        "model.n_steps=2",
        "trainer.max_epochs=1",
        "logger=none",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = sweep_rows(tmp_path)
    assert row["status"] == "ok" and 0 < float(row["test/acc"]) <= 1


def test_submitit_local_launcher_runs_jobs(tmp_path):
    result = run_cli(
        "dpn_lab.train",
        "-m",
        "hydra/launcher=submitit_local",
        "model.n_steps=0,2",
        "trainer.max_epochs=1",
        "logger=none",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["status"] for r in sweep_rows(tmp_path)] == ["ok", "ok"]


def test_the_wheel_carries_the_configs(tmp_path):
    import subprocess
    import sys
    import zipfile

    from conftest import ROOT

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    names = zipfile.ZipFile(only(tmp_path.glob("dpn_lab-*.whl"))).namelist()
    for config in ("train.yaml", "eval.yaml", "model/dpn.yaml", "data/digits.yaml", "hydra/default.yaml"):
        assert f"dpn_lab/conf/{config}" in names
