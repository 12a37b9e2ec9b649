"""Building the parts of a run that its config groups list (callbacks/, logger/)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every `_target_` entry of a callbacks/ or logger/ config group (an empty group gives [])."""
    if not group:
        return []
    return [
        instantiate(entry) for entry in group.values() if OmegaConf.is_dict(entry) and "_target_" in entry
    ]
