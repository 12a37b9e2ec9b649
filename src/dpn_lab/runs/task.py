"""The task wrapper every command (train, eval, analyze) runs in: any failure reaches the user as one
`error:` line and a non-zero exit, a failed job of a sweep is recorded and the sweep goes on (and then exits
1), SIGTERM and SIGINT stop with a checkpoint, and every outcome is written to result.json."""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict
from pytorch_lightning.utilities import rank_zero_only

from dpn_lab.errors import ConfigError, DataError, DivergenceError, NonFiniteRefinementError, RunInterrupted
from dpn_lab.runs import sweep_summary
from dpn_lab.runs.lock import hold_run_directory, is_ddp_child
from dpn_lab.runs.outcome import earlier_result, format_summary, same_job, write_result
from dpn_lab.runs.preflight import preflight, wants_traceback
from dpn_lab.runs.wandb_setup import finish_wandb, name_runs_by_sweep

# Mistakes a user can act on (the package's own error types, which every validation raises): their line is
# enough. Anything else is a bug, whatever its type: its traceback goes to a file.
USER_ERRORS = (ConfigError, DataError, DivergenceError, NonFiniteRefinementError)
# what the machine, not the code, did to a file operation: a full disk or quota, a file over the size
# limit, a read-only file system, no permission
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
TRACEBACK_FILE = "traceback.txt"
STATUS = {signal.SIGTERM: "preempted", signal.SIGINT: "interrupted"}

log = logging.getLogger("dpn_lab")


class failed_run:  # noqa: N801 (a namespace, not a class to build)
    """The failure of a single (not multirun) job, which run_task hands to command_line."""

    error: Exception | None = None


def one_line(error: BaseException) -> str:
    notes = " ".join(getattr(error, "__notes__", []))
    return " ".join(f"{type(error).__name__}: {error} {notes}".split())


class _TolerantOutput:
    """Standard output that a failed write (a full disk, a closed pipe) does not stop: the first failure is
    remembered, later output goes nowhere, and the command reports it in one line once the work is done."""

    def __init__(self, stream) -> None:
        self._stream, self.failure = stream, None

    def _guard(self, action: Callable[[], Any]) -> Any:
        if self.failure is None:
            try:
                return action()
            except OSError as error:
                self.failure = error
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())  # the exit-time flush then succeeds too
                os.close(devnull)
        return None

    def write(self, text: str) -> int:
        self._guard(lambda: self._stream.write(text))
        return len(text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip().startswith("💡 Tip")


def _quiet_the_noise() -> None:
    """Silence what nobody can act on: Lightning's advertising tips (logged through its rank_zero module)
    and its second 'Seed set' line, a deprecation warning from inside Lightning, and W&B's banner."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropTips())
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)  # ours says it first
    os.environ.setdefault("WANDB_SILENT", "true")
    if is_ddp_child():
        logging.disable(logging.INFO)  # rank 0 reports; other ranks speak only to warn or fail


def command_line(command: str, help_text: str, hydra_main: Callable[[], Any]) -> None:
    """A command's entry point: checks the command line in one line (see preflight), runs Hydra, and turns
    whatever escapes into one `error:` line (HYDRA_FULL_ERROR=1 keeps the traceback instead)."""
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(errors="backslashreplace")  # e.g. PYTHONIOENCODING=ascii and a progress bar
    output = sys.stdout = _TolerantOutput(sys.stdout)
    sweep_summary.last_sweep, failed_run.error = None, None  # a command run again in one process starts clean
    preflight(command, help_text)
    _quiet_the_noise()
    # Hydra turns an exception in a callback (the sweep comparison) into a warning; a failed comparison
    # must fail the command instead, in its one line
    warnings.filterwarnings("error", message=r"Callback \w+\.on_\w+ raised", category=UserWarning)
    os.environ.setdefault("DPN_LAB_TRACEBACK", "1" if wants_traceback() else "0")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises to us instead of printing its own block
    try:
        hydra_main()
        if failed_run.error is not None:
            raise failed_run.error
    except RunInterrupted as stop:
        if wants_traceback():
            raise
        print(f"error: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except (Exception, KeyboardInterrupt) as error:
        if wants_traceback():
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
    sweep = sweep_summary.last_sweep
    if sweep is not None and sweep.failed:
        print(
            f"error: SweepFailed: {sweep.failed} of {sweep.total} jobs failed; each job's status and error: "
            f"{sweep.table}",
            file=sys.stderr,
        )
        sys.exit(1)
    if output.failure is not None:
        print(
            f"error: OSError: standard output could not be written ({output.failure.strerror}); "
            "the run finished and its files are complete",
            file=sys.stderr,
        )
        sys.exit(1)


def is_user_error(error: BaseException) -> bool:
    """A mistake of the config or the data, or a machine that cannot hold the run's files: one line says
    all. Everything else is a bug (a ValueError from inside a library included)."""
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno in MACHINE_ERRNOS


def keep_traceback(path: Path) -> str:
    """Write the traceback of the exception being handled to `path`; what the one line adds about it."""
    try:
        path.write_text(traceback.format_exc())
    except OSError as failure:  # e.g. the disk that failed the run: the one line still says what happened
        return f"(an unexpected error; its traceback could not be written to {path}: {failure.strerror})"
    return f"(an unexpected error: traceback in {path})"


def continue_from_last_checkpoint(cfg: DictConfig, output_dir: Path) -> None:
    """A training job of a sweep that was killed before it finished resumes from the last.ckpt it left."""
    last = Path(str(cfg.paths.checkpoint_dir)) / "last.ckpt" if cfg.get("paths") else None
    if cfg.get("train") and cfg.get("ckpt_path", "") is None and last is not None and last.is_file():
        log.info(f"Continuing job {output_dir.name} from {last}: it was stopped before it finished")
        with open_dict(cfg):
            cfg.ckpt_path = str(last)


def _raise_interrupted(signum: int, _frame) -> None:
    raise RunInterrupted(signum)


Work = Callable[[Path, bool], tuple[dict[str, float], str | None]]


def run_task(cfg: DictConfig, work: Work) -> dict[str, float] | None:
    """Run `work(output_dir, multirun) -> (metrics, best checkpoint or None)` as one Hydra job.

    Holds the run directory, writes result.json (ok, failed, preempted or interrupted) on rank 0 and closes
    the W&B run whatever happens. A bug's traceback goes to the run's traceback.txt. A failure ends a single
    run (command_line prints it); in a sweep it is recorded, logged, and None is returned so the sweep goes
    on. SIGTERM or SIGINT ends the run, or the whole sweep (PreemptionCheckpoint saves during training).
    A sweep run again keeps each job that finished before with the same code and overrides (result.json
    says ok), and a training job that started but did not finish continues from its last.ckpt.
    """
    job = HydraConfig.get()
    output_dir, overrides = Path(job.runtime.output_dir), list(job.overrides.task)
    multirun = job.mode == RunMode.MULTIRUN
    rank_zero = rank_zero_only.rank == 0 and not is_ddp_child()
    name_runs_by_sweep(cfg)
    earlier = earlier_result(output_dir) if multirun else None
    if same_job(earlier, overrides):  # a sweep run again after it was killed
        if earlier["status"] == "ok":
            log.info(f"Keeping job {output_dir.name}: it finished before with the same code and overrides")
            return {k: math.nan if v is None else v for k, v in earlier["metrics"].items()}
        continue_from_last_checkpoint(cfg, output_dir)
    with ExitStack() as stack:
        if rank_zero:
            stack.enter_context(hold_run_directory(output_dir))
            write_result(output_dir, "running", overrides, {})
        if threading.current_thread() is threading.main_thread():
            for signum in STATUS:
                previous = signal.signal(signum, _raise_interrupted)
                stack.callback(signal.signal, signum, previous)
        try:
            metrics, best = work(output_dir, multirun)
        except RunInterrupted as stop:
            if rank_zero:
                write_result(output_dir, STATUS.get(stop.signum, "interrupted"), overrides, {}, str(stop))
            raise
        except Exception as error:
            if not is_user_error(error):
                error.add_note(keep_traceback(output_dir / TRACEBACK_FILE))
            if rank_zero:
                write_result(output_dir, "failed", overrides, {}, one_line(error))
            if not multirun:
                if wants_traceback():
                    raise
                # handed to command_line past Hydra, which would print a line of its own before ours
                failed_run.error = error
                return None
            log.error(f"job failed: {one_line(error)}")
            return None
        finally:
            finish_wandb()
        if rank_zero:
            write_result(output_dir, "ok", overrides, metrics)
            print(format_summary(cfg.task_name, metrics, output_dir, best))
    return metrics
