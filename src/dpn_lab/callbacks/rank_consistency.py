"""RankConsistencyCheck: after fitting under DDP, every rank must hold the same parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as L
import torch


def parameter_checksum(module: torch.nn.Module) -> float:
    """A float64 fingerprint of all parameters (sum of each tensor weighted by its position)."""
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(module.parameters()):
        flat = p.detach().to("cpu", torch.float64).flatten()
        total += (flat * torch.linspace(1, 2, flat.numel(), dtype=torch.float64)).sum() * (i + 1)
    return float(total)


class RankConsistencyCheck(L.Callback):
    """Under DDP, compares a parameter checksum of every rank when training starts (after initialisation
    such as KMeansInit) and when fitting ends; writes them to rank_checksums.json, fails on a mismatch."""

    def __init__(self) -> None:
        self.checksums: dict[str, list[float]] = {}

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule, moment: str) -> None:
        if trainer.world_size == 1:
            return
        checksum = torch.tensor([parameter_checksum(pl_module)], dtype=torch.float64, device=pl_module.device)
        self.checksums[moment] = pl_module.all_gather(checksum).flatten().tolist()
        if trainer.is_global_zero:
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.default_root_dir) / "rank_checksums.json").write_text(json.dumps(self.checksums))
        if len(set(self.checksums[moment])) > 1:
            raise RuntimeError(
                f"DDP ranks hold different parameters at {moment} (checksums {self.checksums[moment]})"
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, "train_start")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer, pl_module, "fit_end")
