"""W&B glue around Lightning's WandbLogger: sweep grouping, run names, and closing runs between jobs."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.loggers import WandbLogger


class QuietWandbLogger(WandbLogger):
    """Lightning's WandbLogger, minus the `anonymous` argument it always passes to wandb.init: wandb warns on
    every run that the setting has no effect, a line nobody can act on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


def name_runs_by_sweep(cfg: DictConfig) -> None:
    """Under --multirun, group W&B runs by sweep directory and name each by its overrides (unless set)."""
    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    job = HydraConfig.get()
    if wandb_cfg is None or job.mode != RunMode.MULTIRUN:
        return
    with open_dict(cfg):
        if wandb_cfg.get("group") is None:
            wandb_cfg.group = Path(job.sweep.dir).name
        if wandb_cfg.get("name") is None:
            wandb_cfg.name = job.job.override_dirname or f"job{job.job.num}"


def finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts its own."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
