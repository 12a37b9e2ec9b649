"""OmegaConf resolvers used by conf/: unique run ids and the W&B offline default."""

from __future__ import annotations

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


def register_resolvers() -> None:
    """Register `${run_name:}` (cached per config, see _run_name) and `${wandb_offline:}`."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", _run_name, use_cache=True)
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", _wandb_offline)
