"""Reliability at the command line: kill and resume, divergence, wrong inputs, secrets, pre-emption, DDP failures."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import QUICK, helpers_env, no_process_mentions, run_cli, run_in_process, start_cli, wait_until
from dpn_lab.checkpoints import read_checkpoint

FAST = ["logger=csv", *QUICK]


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.slow
def test_a_killed_deterministic_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    args = ["seed=3", "trainer.deterministic=true", "trainer.max_epochs=6", *FAST]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    assert (
        run_in_process("dpn_lab.train", *args, cwd=whole).returncode == 0
    )  # only the killed run needs a process

    process = start_cli(*args, cwd=killed, stdout=subprocess.DEVNULL)

    def epoch_2_saved() -> bool:
        found = list((killed / "outputs").glob("train/runs/*/checkpoints/last.ckpt"))
        return bool(found) and read_checkpoint(str(found[0]))["epoch"] >= 2

    wait_until(epoch_2_saved, 120, "a checkpoint of epoch >= 2")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    (first,) = (killed / "outputs" / "train" / "runs").iterdir()
    # it really was killed mid-training: its result still says what it said when it started
    assert json.loads((first / "result.json").read_text())["status"] == "running"
    epoch_at_kill = read_checkpoint(str(first / "checkpoints" / "last.ckpt"))["epoch"]
    assert 2 <= epoch_at_kill < 5

    resumed = run_in_process("dpn_lab.train", *args, "ckpt_path=last", cwd=killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (whole_run,) = (whole / "outputs" / "train" / "runs").iterdir()
    a, b = final_state(whole_run), final_state(first)
    assert a["epoch"] == b["epoch"] == 5 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    second = next(r for r in (killed / "outputs" / "train" / "runs").iterdir() if r != first)
    metrics_a = json.loads((whole_run / "result.json").read_text())["metrics"]
    metrics_b = json.loads((second / "result.json").read_text())["metrics"]
    for key in ("test/acc", "test/loss", "val/acc_best", "val/loss"):
        assert metrics_a[key] == metrics_b[key], key


@pytest.mark.slow
def test_divergence_stops_with_its_cause_and_keeps_the_last_good_checkpoint(tmp_path):
    # the learning rate grows 10^4-fold per epoch: fine in epoch 0, diverging soon after
    result = run_in_process(
        "dpn_lab.train",
        "model.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "~model.scheduler.T_max",
        "+model.scheduler.gamma=10000",
        "trainer.max_epochs=6",
        *FAST,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: DivergenceError: training diverged at epoch ")
    assert "global step" in lines[-1] and "the learning rate (now " in lines[-1]
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    for path in (run / "checkpoints").glob("*.ckpt"):
        state = read_checkpoint(str(path))["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
    assert json.loads((run / "result.json").read_text())["status"] == "failed"
    assert not list((run / "checkpoints").glob(".*partial*"))


@pytest.mark.slow
def test_wrong_inputs_at_the_command_line_are_one_line(trained_run, tmp_path):
    ckpt = trained_run.last
    corrupt_mnist = tmp_path / "data" / "MNIST" / "raw"
    corrupt_mnist.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (corrupt_mnist / name).write_bytes(b"\x00\x00\x08\x03not an idx file")
    cases = [
        (["model.n_compnents=3"], "error: ConfigError: Could not override 'model.n_compnents'"),
        (
            ["data=imagenet"],
            "error: ConfigError: In 'train': Could not find 'data/imagenet'; available options in 'data': blobs,",
        ),
        (["model.n_steps=[1"], "error: ConfigError: no viable alternative at input '[1'"),
        (["data=mnist"], "error: DataError: data=mnist: no usable MNIST files under"),
        (
            [f"ckpt_path={ckpt}", "model.n_components=7"],
            "was trained with another model configuration (extractor=cnn, feature_dim=32, n_components=16",
        ),
        (
            ["trainer.accelerator=gpu", "trainer.devices=8"],
            "error: ConfigError: trainer.accelerator=gpu but no CUDA device is visible",
        ),
    ]
    for args, expected in cases:
        result = run_in_process("dpn_lab.train", *args, *FAST, cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, (args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, args
        assert expected in lines[-1], (args, lines[-1])
    for module in ("dpn_lab.eval", "dpn_lab.analyze"):
        bad = tmp_path / "bad.ckpt"
        bad.write_bytes(b"garbage")
        result = run_in_process(module, f"ckpt_path={bad}", cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(
            f"error: ConfigError: ckpt_path={bad}: not a"
        ), result.stderr[-1000:]


@pytest.mark.slow
def test_no_secret_from_the_environment_is_written_anywhere(tmp_path):
    secret = "wandb-api-key-0123456789abcdef0123456789abcdef"
    result = run_cli(
        "dpn_lab.train",
        "logger=wandb",
        "trainer.max_epochs=1",
        *QUICK,
        cwd=tmp_path,
        env={"WANDB_API_KEY": secret, "WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    files = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_that_resumes(tmp_path):
    marker = tmp_path / "mid_epoch"
    process = start_cli(
        "trainer.max_epochs=200",
        *FAST,
        "+callbacks.marker._target_=markers.TouchAtBatch",
        f"+callbacks.marker.path={marker}",
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        env=helpers_env(),
    )
    wait_until(marker.exists, 120, "batch 3 of epoch 1")
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM: ")
    assert process.returncode == 143  # 128 + SIGTERM: a scheduler sees that the job did not finish
    (run,) = (tmp_path / "outputs" / "train" / "runs").iterdir()
    last = run / "checkpoints" / "last.ckpt"
    assert last.stat().st_mtime >= signalled  # written because of the signal, not left from an epoch end
    state = read_checkpoint(str(last))
    assert state["epoch"] < 199
    assert json.loads((run / "result.json").read_text())["status"] == "preempted"
    resumed = run_in_process(
        "dpn_lab.train",
        "trainer.max_epochs=" + str(state["epoch"] + 2),
        "ckpt_path=last",
        *FAST,
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("failing_rank", [1, 0])
def test_one_failing_ddp_rank_ends_every_process_with_its_error(tmp_path, failing_rank):
    start = time.time()
    result = run_cli(
        "dpn_lab.train",
        "trainer=ddp_sim",
        "trainer.max_epochs=5",
        "logger=none",
        "+callbacks.fail._target_=failing_rank.FailOnRank",
        f"+callbacks.fail.rank={failing_rank}",
        cwd=tmp_path,
        timeout=120,
        env=helpers_env(),
    )
    assert time.time() - start < 60
    assert result.returncode != 0
    assert f"rank {failing_rank} failed on purpose" in result.stderr
    wait_until(
        lambda: no_process_mentions(str(tmp_path)) and no_process_mentions("train_ddp_process"),
        10,
        "every rank has ended",
    )
