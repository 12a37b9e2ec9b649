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
    """Gathers a parameter checksum from every rank at the end of fit; writes them and fails on a mismatch."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checksum = torch.tensor([parameter_checksum(pl_module)], dtype=torch.float64, device=pl_module.device)
        gathered = pl_module.all_gather(checksum).flatten().tolist()
        if trainer.is_global_zero and trainer.world_size > 1:
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)
            (Path(trainer.default_root_dir) / "rank_checksums.json").write_text(json.dumps(gathered))
        if len(set(gathered)) > 1:
            raise RuntimeError(f"DDP ranks ended with different parameters (checksums {gathered})")
