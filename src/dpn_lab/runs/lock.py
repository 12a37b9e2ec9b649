"""One process per run directory: a second run (or a second `ckpt_path=last` resume of the same run) is told
which process holds it, instead of both writing the same files."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dpn_lab.errors import ConfigError

LOCK_FILE = ".lock"


def is_ddp_child() -> bool:
    """A process Lightning started for rank > 0 (it re-executes the command with LOCAL_RANK set)."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def _refuse(directory: Path, key: str, handle) -> None:
    handle.seek(0)
    holder = handle.read().strip() or "another process"
    raise ConfigError(
        f"{key}={directory} is in use by {holder}: wait for it to end, or choose another directory"
    )


@contextmanager
def hold_run_directory(directory: Path, key: str = "hydra.run.dir") -> Iterator[None]:
    """Hold an exclusive lock on `directory` (its .lock file names the holder) until the block ends; the
    kernel drops it when the process dies, so a killed run never leaves a stale lock. DDP ranks > 0 share
    their rank 0's hold."""
    if is_ddp_child():
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse(directory, key, handle)
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_run_directory_free(directory: Path, key: str) -> None:
    """ConfigError when another process holds `directory` (the lock is tried and released at once)."""
    lock = directory / LOCK_FILE
    if not lock.is_file():
        return
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse(directory, key, handle)
        fcntl.flock(handle, fcntl.LOCK_UN)
