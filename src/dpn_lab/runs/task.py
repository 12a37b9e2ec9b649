"""The task wrapper every command (train, eval, analyze) runs in: a user's mistake is one line and a non-zero
exit, a failed job of a sweep is recorded and the sweep goes on, SIGTERM is a pre-emption, and every outcome
is written to result.json."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dpn_lab.errors import ConfigError, DataError, DivergenceError, NonFiniteRefinementError
from dpn_lab.runs.result import format_summary, write_result
from dpn_lab.runs.wandb_setup import finish_wandb, name_runs_by_sweep

# Mistakes a user can act on. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ConfigError,
    DataError,
    DivergenceError,
    NonFiniteRefinementError,
    ValueError,
    FileNotFoundError,
)

T = TypeVar("T")
log = logging.getLogger("dpn_lab")


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _hydra_message(error: Exception) -> str:
    """Hydra's multi-line composition errors as one line (its key/type detail lines dropped)."""
    lines = [line.strip() for line in str(error).splitlines()]
    text = " ".join(
        line for line in lines if line and not line.startswith(("full_key", "object_type", "reference_type"))
    )
    text = text.partition(" Config search path")[0]
    head, found, options = text.partition("Available options in ")
    if found:
        group, _, names = options.partition(":")
        names = [n for n in names.split() if not n.startswith("_")]  # _base files are building blocks
        text = f"{head.strip()}; available options in {group}: {', '.join(names)}"
    return text


def check_overrides(config_name: str, args: list[str]) -> None:
    """Compose the config once with the command line's overrides (the first value of each sweep) so that an
    unknown key, group option or malformed override fails as one ConfigError line before Hydra starts."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return  # --cfg, --help, -cn ...: Hydra's own business
    overrides = [a for a in args if not a.startswith("-")]
    try:
        concrete = []
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                first = next(iter(override.sweep_string_iterator()))
                concrete.append(f"{override.get_key_element()}={first}")
            else:
                concrete.append(override.input_line)
        with initialize_config_module(config_module="dpn_lab.conf", version_base="1.3"):
            compose(config_name, overrides=concrete, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_hydra_message(error)) from None


def exit_on_user_error(run: Callable[[], T]) -> T:
    """Run; on a user error print one line to stderr and exit 1 (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    try:
        return run()
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)


Work = Callable[[Path, bool], tuple[dict[str, float], str | None]]


def run_task(cfg: DictConfig, work: Work) -> dict[str, float] | None:
    """Run `work(output_dir, multirun) -> (metrics, best checkpoint or None)` as one Hydra job.

    Writes result.json (ok, failed or preempted) on rank 0 and closes the W&B run whatever happens.
    SIGTERM exits 143 (128 + SIGTERM) after Lightning saved last.ckpt. A failure ends a single run (the
    caller prints it); in a sweep it is recorded, logged, and None is returned so the sweep goes on.
    """
    job = HydraConfig.get()
    output_dir, overrides = Path(job.runtime.output_dir), list(job.overrides.task)
    multirun = job.mode == RunMode.MULTIRUN
    name_runs_by_sweep(cfg)
    try:
        metrics, best = work(output_dir, multirun)
    except SIGTERMException:
        # pre-empted: last.ckpt was written (PreemptionCheckpoint); a scheduler must not read this as success
        if rank_zero_only.rank == 0:
            write_result(
                output_dir, "preempted", overrides, {}, "stopped by SIGTERM; resume with ckpt_path=last"
            )
        log.error("stopped by SIGTERM: last.ckpt is saved, resume with ckpt_path=last")
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:
        if rank_zero_only.rank == 0:
            write_result(output_dir, "failed", overrides, {}, one_line(error))
        if not multirun:
            raise
        log.error(f"job failed: {one_line(error)}")
        if not isinstance(error, USER_ERRORS):
            log.error(traceback.format_exc())
        return None
    finally:
        finish_wandb()
    if rank_zero_only.rank == 0:
        write_result(output_dir, "ok", overrides, metrics)
        print(format_summary(metrics, output_dir, best))
    return metrics


def command_line(config_name: str, hydra_main: Callable[[], Any]) -> None:
    """A command's entry point: the overrides are checked in one line before Hydra starts the job."""
    exit_on_user_error(lambda: check_overrides(config_name, sys.argv[1:]))
    hydra_main()
