"""A checkpoint, a run directory or a sweep file is data: nothing in it can name code to run."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dpn_lab.checkpoint_io import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint
from dpn_lab.data import DigitsDataModule
from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError
from dpn_lab.lit_module import DPNLitModule

DATA_ARGS = {
    "batch_size": 64,
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "split_seed": 0,
    "num_workers": 0,
    "train_corruption": None,
    "test_corruption": None,
    "data_dir": "data",
    "download": False,
}
LEGACY_TARGET = "dpn_lab.data.digits.DigitsDataModule"  # what checkpoints held before data records


class _Shell:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payloads(place: Path) -> dict[str, dict]:
    """Hydra specs that would run a command, empty a file or write one if anything instantiated them."""
    pickled = _Shell()
    pickled.marker = place / "marker_pickle"
    (place / "payload.pkl").write_bytes(pickle.dumps(pickled))
    return {
        "os.system": {"_target_": "os.system", "_args_": [f"touch {place / 'marker_system'}"]},
        "builtins.open": {"_target_": "builtins.open", "_args_": [str(place / "victim.txt"), "w"]},
        "pathlib.Path.write_text": {
            "_target_": "pathlib.Path.write_text",
            "self": {"_target_": "pathlib.Path", "_args_": [str(place / "marker_write")]},
            "data": "owned",
        },
        "torch.load": {"_target_": "torch.load", "f": str(place / "payload.pkl"), "weights_only": False},
    }


def placements(payload: dict) -> dict[str, dict]:
    """Where a payload can sit in a checkpoint: the data entry (old and new form) and the hyperparameters."""
    return {
        "legacy data, nested": {
            "DigitsDataModule": {"_target_": LEGACY_TARGET, **DATA_ARGS, "train_corruption": payload}
        },
        "data entry replaced": {"DigitsDataModule": payload},
        "record args": {
            "DigitsDataModule": {"name": "digits", "args": {**DATA_ARGS, "test_corruption": payload}}
        },
        "hyperparameters": {"hyper_parameters_extra": {"extractor_kwargs": payload}},
    }


def checkpoint_file(path: Path, extra: dict | None = None, data: dict | None = None) -> Path:
    """A real checkpoint of an untrained default DPN (what Lightning writes, minus loop state)."""
    torch.manual_seed(0)
    model = DPNLitModule(input_shape=[1, 8, 8], n_classes=10, extractor="cnn", precision="diag")
    checkpoint = {
        "epoch": 0,
        "global_step": 0,
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "DigitsDataModule": data or {"name": "digits", "args": DATA_ARGS},
    }
    for key, value in (extra or {}).items():
        if key == "hyper_parameters_extra":
            checkpoint["hyper_parameters"].update(value)
        else:
            checkpoint[key] = value
    torch.save(checkpoint, path)
    return path


def untouched(place: Path, victim_hash: str) -> None:
    assert hashlib.sha256((place / "victim.txt").read_bytes()).hexdigest() == victim_hash
    assert not [p.name for p in place.glob("marker*")]


@pytest.fixture
def place(tmp_path) -> tuple[Path, str]:
    (tmp_path / "victim.txt").write_text("a researcher's notes\n")
    return tmp_path, hashlib.sha256(b"a researcher's notes\n").hexdigest()


def test_every_hostile_placement_is_refused_when_read(place):
    directory, victim_hash = place
    for name, payload in payloads(directory).items():
        for where, extra in placements(payload).items():
            path = checkpoint_file(directory / "hostile.ckpt", extra)
            with pytest.raises(ConfigError, match=r"hostile.ckpt: refused: .*import path") as caught:
                checkpoint = read_checkpoint(str(path))
                data_module_from_checkpoint(checkpoint, str(path))
            assert "\n" not in str(caught.value), (name, where)
            untouched(directory, victim_hash)


def test_a_foreign_data_name_or_argument_is_refused():
    with pytest.raises(ConfigError, match="data 'imagenet' is not allowed; choose one of: digits, mnist5k"):
        build_data_module({"name": "imagenet", "args": {}}, "x")
    with pytest.raises(ConfigError, match="x: data digits takes no argument shell; it takes: batch_size"):
        build_data_module({"name": "digits", "args": {"shell": "rm"}}, "x")
    with pytest.raises(ConfigError, match=r"x: data.batch_size is not plain data"):
        build_data_module({"name": "digits", "args": {"batch_size": object()}}, "x")
    with pytest.raises(
        ConfigError, match="refused: the data names the import path 'dpn_lab.lit_module.DPNLitModule'"
    ):
        build_data_module({"_target_": "dpn_lab.lit_module.DPNLitModule"}, "x")


def test_a_checkpoint_with_an_unknown_hyperparameter_is_one_line(tmp_path):
    path = checkpoint_file(tmp_path / "odd.ckpt", {"hyper_parameters_extra": {"shell": "rm -rf"}})
    with pytest.raises(ConfigError, match="odd.ckpt: unknown hyperparameter shell; a DPN takes: "):
        model_from_checkpoint(read_checkpoint(str(path)), str(path))


def test_checkpoints_written_before_records_still_rebuild_their_data(tmp_path):
    args = {**DATA_ARGS, "split_seed": 3, "batch_size": 32}
    path = checkpoint_file(tmp_path / "old.ckpt", data={"_target_": LEGACY_TARGET, **args})
    checkpoint = read_checkpoint(str(path))
    datamodule = data_module_from_checkpoint(checkpoint, str(path))
    assert type(datamodule) is DigitsDataModule and dict(datamodule.hparams) == args
    assert model_from_checkpoint(checkpoint, str(path)).hparams.precision == "diag"
    # what a checkpoint stores now: name and plain arguments, no import path
    assert datamodule.state_dict() == {"name": "digits", "args": args}


def run_all(commands: list[tuple[str, list[str]]], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the CLI commands side by side (each is mostly import time)."""
    env = {**os.environ, "DPN_LAB_ROOT": str(cwd), "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module, args in commands
    ]
    results = []
    for (module, args), process in zip(commands, processes, strict=True):
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess([module, *args], process.returncode, out, err))
    return results


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
