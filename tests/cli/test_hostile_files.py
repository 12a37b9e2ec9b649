"""Hostile checkpoints and run directories against every command: refused in one line, nothing written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from conftest import (
    DATA_ARGS,
    LEGACY_TARGET,
    checkpoint_file,
    payloads,
    placements,
    run_in_process,
    untouched,
)
from dpn_lab.checkpoints import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint


def run_all(commands: list[tuple[str, list[str]]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the commands one after the other, in-process (each is refused before any training)."""
    return [run_in_process(module, *args, cwd=cwd) for module, args in commands]


@pytest.mark.slow
def test_hostile_checkpoints_are_refused_by_every_command(place):
    directory, victim_hash = place
    commands, placed = [], list(placements({}).keys())
    for i, payload in enumerate(payloads(directory).values()):
        where = placed[i % len(placed)]  # every payload in another place
        path = checkpoint_file(directory / f"hostile_{i}.ckpt", placements(payload)[where])
        for module in ("dpn_lab.train", "dpn_lab.eval", "dpn_lab.analyze"):
            commands.append(
                (
                    module,
                    [f"ckpt_path={path}", "logger=none"]
                    if module == "dpn_lab.train"
                    else [f"ckpt_path={path}"],
                )
            )
    for result in run_all(commands, directory):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, (result.args, result.stderr[-2000:])
        assert "Traceback" not in result.stderr, result.args
        assert lines[-1].startswith("error: ConfigError: ckpt_path=") and "refused" in lines[-1], lines[-1]
    untouched(directory, victim_hash)


@pytest.mark.slow
def test_hostile_run_directories_are_skipped_by_resume_and_old_checkpoints_evaluate(place):
    directory, victim_hash = place
    runs = directory / "outputs" / "train" / "runs"
    for i, payload in enumerate(payloads(directory).values()):
        run = runs / f"hostile_{i}"
        (run / ".hydra").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        checkpoint_file(run / "checkpoints" / "last.ckpt")
        # the default data and model, with a payload where a data argument belongs
        config = {
            "seed": 0,
            "data": {"_target_": "dpn_lab.data.DigitsDataModule", **DATA_ARGS, "train_corruption": payload},
        }
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (runs / "unparsable" / ".hydra").mkdir(parents=True)
    (runs / "unparsable" / ".hydra" / "config.yaml").write_text("data: [unclosed\n")
    (runs / "unparsable" / "checkpoints").mkdir()
    checkpoint_file(runs / "unparsable" / "checkpoints" / "last.ckpt")
    old = checkpoint_file(directory / "old.ckpt", data={"_target_": LEGACY_TARGET, **DATA_ARGS})
    resumed, evaluated = run_all(
        [
            ("dpn_lab.train", ["ckpt_path=last", "logger=none"]),
            ("dpn_lab.eval", [f"ckpt_path={old}", "robustness@eval=none"]),
        ],
        directory,
    )
    lines = [line for line in resumed.stderr.splitlines() if line.strip()]
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr
    assert lines[-1].startswith("error: ConfigError: ckpt_path=last: no earlier run"), lines[-1]
    skipped = [
        line for line in (resumed.stdout + resumed.stderr).splitlines() if "ckpt_path=last: skipping" in line
    ]
    assert sum("refused" in line for line in skipped) == 4 and len(skipped) == 5, resumed.stdout[-3000:]
    untouched(directory, victim_hash)

    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (eval_run,) = (directory / "outputs" / "eval" / "runs").iterdir()
    accuracy = json.loads((eval_run / "result.json").read_text())["metrics"]["test/acc"]
    checkpoint = read_checkpoint(str(old))
    model, datamodule = (
        model_from_checkpoint(checkpoint, str(old)).eval(),
        data_module_from_checkpoint(checkpoint, str(old)),
    )
    datamodule.setup()
    test = datamodule.splits["test"]
    with torch.no_grad():
        expected = float((model(test.inputs).argmax(1) == test.labels).float().mean())
    assert accuracy == pytest.approx(expected, abs=1e-6)
