"""OmegaConf resolvers used by conf/: unique run ids, the W&B offline default and a stage-2 job's stage 1."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf


def _wandb_offline() -> bool:
    """Offline unless the user chose online (WANDB_MODE=online) or has credentials (API key or netrc)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return True
    if mode == "online":
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    logged_in = netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    return not (os.environ.get("WANDB_API_KEY") or logged_in)


def _run_name() -> str:
    """<date>_<time>_<8 random hex digits>, unique even for jobs started in the same second. Under SLURM:
    slurm_<job id>[_<array task>], stable across requeues, so a requeued job finds its own checkpoints."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        return f"slurm_{job}" + (f"_{task}" if task else "")
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{uuid.uuid4().hex[:8]}"


def _stage_one_job(sweep_dir: str | None, seed: int) -> str:
    """The directory of the finished `variant=stage_one` job with `seed` in sweep_dir (recipe=frozen_denoiser:
    the sequential launcher runs the stage-1 jobs first), or a path naming what is missing, which
    model.init_from then refuses in one line."""
    if sweep_dir is None:
        return "no-stage_one_dir:set-model.init_from"
    wanted = {"variant=stage_one", f"seed={seed}"}
    for result in sorted(Path(sweep_dir).glob("*/result.json")):
        try:
            found = json.loads(result.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(found, dict)
            and found.get("status") == "ok"
            and wanted <= set(found.get("overrides", []))
        ):
            return str(result.parent)
    return str(Path(sweep_dir) / f"no-finished-stage_one-job-with-seed-{seed}")


def register_resolvers() -> None:
    """Register `${run_name:}` (cached per config, see _run_name), `${wandb_offline:}` and
    `${stage_one_job:<sweep dir>,<seed>}`."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", _run_name, use_cache=True)
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", _wandb_offline)
    if not OmegaConf.has_resolver("stage_one_job"):
        OmegaConf.register_new_resolver("stage_one_job", _stage_one_job)
