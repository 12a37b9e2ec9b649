"""Shared fixtures: configs composed in-process, and dataset files written in their real on-disk formats."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# isort: off
import dpn_lab  # noqa: F401  first: pins torch's CPU kernels (dpn_lab.runs.cpu_kernels) before torch loads

# isort: on
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.runs.resolvers import register_resolvers

register_resolvers()


@pytest.fixture
def make_cfg(tmp_path):
    """compose(config_name, overrides) with outputs under tmp_path, as Hydra would set them up for a run."""

    def _make(overrides: list[str] = (), config_name: str = "train") -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_module(config_module="dpn_lab.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig().set_config(cfg)
        return cfg

    yield _make
    GlobalHydra.instance().clear()


def _write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of the MNIST files: magic (0, 0, ubyte=8, ndim), big-endian int32 dims, raw bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, array.ndim))
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def write_mnist_files(root: Path, folder: str = "MNIST", n_train: int = 200, n_test: int = 60) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = (rng.random((n, 28, 28)) * 60 + labels[:, None, None] * 19).astype(np.uint8)
        _write_idx(root / folder / "raw" / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / folder / "raw" / f"{prefix}-labels-idx1-ubyte", labels)


def write_cifar10_files(root: Path, per_batch: int = 40, n_test: int = 40) -> None:
    """cifar-10-batches-py: pickled dicts with uint8 'data' (N x 3072, channel-major) and 'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        labels = list(np.arange(n) % 10)
        data = (rng.random((n, 3072)) * 200 + np.array(labels)[:, None] * 5).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


ROOT = Path(__file__).resolve().parents[1]


def cli_environment(cwd: Path, env: dict | None = None) -> dict:
    environment = {**os.environ, "DPN_LAB_ROOT": str(cwd), "WANDB_MODE": "offline", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR", None)
    return environment


def run_cli(
    module: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None, **options
) -> subprocess.CompletedProcess:
    """`python -m module args` as a user runs it, with outputs under cwd (options go to subprocess.run,
    e.g. stdout=<a file> or preexec_fn=...; stdout and stderr are captured unless given)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        text=True,
        timeout=timeout,
        env=cli_environment(cwd, env),
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options},
    )


HELPERS = Path(__file__).resolve().parent / "helpers"


def helpers_env() -> dict:
    """The environment that lets a command line name the test callbacks in tests/helpers/."""
    return {"PYTHONPATH": str(HELPERS) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_until(condition, timeout: float, what: str, every: float = 0.05):
    """condition()'s first truthy value, polled until `timeout` seconds have passed; AssertionError naming
    `what` when it never comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:g} s")


def no_process_mentions(text: str) -> bool:
    """True when no running process has `text` in its command line (e.g. a test's directory)."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return text not in listing


def start_cli(*args: str, cwd: Path, stdout=subprocess.PIPE, env: dict | None = None) -> subprocess.Popen:
    """`python -m dpn_lab.train args` started in the background (for signals), stderr captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "dpn_lab.train", *args],
        cwd=cwd,
        env=cli_environment(cwd, env),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


# Hostile files: what an attacker would put in a checkpoint or run directory if anything instantiated it.
DATA_ARGS = dict(
    DigitsDataModule().hparams
)  # what a default digits checkpoint stores (tests/test_defaults.py)


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
    model = DPNLitModule(input_shape=[1, 8, 8], n_classes=10, extractor="cnn", covariance="diag")
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


def run_in_process(
    module: str, *args: str, cwd: Path, env: dict | None = None, encoding: str = "utf-8"
) -> subprocess.CompletedProcess:
    """`python -m module args` run inside the test process, for tests about what a command does rather than
    about the process itself (signals, DDP, a broken stdout stay in run_cli): the same code path from the
    module's `__main__` (preflight, Hydra, the one-line errors), without paying ~7 s of imports per call.
    `encoding` is the standard streams' (what PYTHONIOENCODING sets for a process, e.g. "ascii").
    The environment, the working directory, sys.argv and the standard streams are restored afterwards."""
    import io
    import runpy
    import traceback
    import warnings

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_argv, saved_streams = sys.argv, (sys.stdout, sys.stderr)
    streams = [io.TextIOWrapper(io.BytesIO(), encoding=encoding, write_through=True) for _ in range(2)]
    environment = cli_environment(cwd, env)  # before clearing: it starts from the test process's environment
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    sys.argv, (sys.stdout, sys.stderr) = [module, *args], streams
    code = 0
    try:
        with warnings.catch_warnings():  # the test process has imported the command module already
            warnings.filterwarnings("ignore", "'dpn_lab.* found in sys.modules", RuntimeWarning)
            runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # what a process would have printed as its last words
        streams[1].write(traceback.format_exc())
        code = 1
    finally:
        sys.argv, (sys.stdout, sys.stderr) = saved_argv, saved_streams
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        GlobalHydra.instance().clear()
    out, err = (stream.buffer.getvalue().decode(encoding, "replace") for stream in streams)
    return subprocess.CompletedProcess([module, *args], code, out, err)


sys.path.append(str(HELPERS))  # the test callbacks, for commands run in-process

# for runs whose figures and corruption pass no assertion reads: each costs seconds per run
QUICK = ("~callbacks.figures", "robustness@eval=none")


@dataclass(frozen=True)
class TrainedRun:
    root: Path  # DPN_LAB_ROOT of the run
    run_dir: Path
    result: subprocess.CompletedProcess

    @property
    def last(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    @property
    def best(self) -> Path:
        (best,) = (self.run_dir / "checkpoints").glob("epoch_*.ckpt")
        return best


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One `python -m dpn_lab.train trainer.max_epochs=2` (the default config otherwise: figures, CSV logs,
    the Gaussian-noise pass), shared by every test that needs a trained run or checkpoint. Read it, never
    change it: a test that modifies a run copies it first."""
    root = tmp_path_factory.mktemp("trained")
    result = run_in_process("dpn_lab.train", "trainer.max_epochs=2", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (root / "outputs" / "train" / "runs").iterdir()
    return TrainedRun(root, run_dir, result)
