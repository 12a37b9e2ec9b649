"""OmegaConf resolvers used by conf/: unique run ids and the W&B offline default."""

from __future__ import annotations

import os
import uuid
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


def register_resolvers() -> None:
    """Register `${run_id:}` (8 random hex digits, cached per config) and `${wandb_offline:}`."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: uuid.uuid4().hex[:8], use_cache=True)
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", _wandb_offline)
