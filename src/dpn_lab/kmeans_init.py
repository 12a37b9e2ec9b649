"""KMeansInit: place the potential's centers on the training features when fitting starts."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as L
import torch

from dpn_lab.center_init import initialize_potential

log = logging.getLogger(__name__)


class KMeansInit(L.Callback):
    """k-means (or a GMM fit) on the features of a bounded sample of the training set, at fit start.

    Skipped when fitting resumes from a checkpoint (the centers come from it). Under DDP, rank 0 fits and
    broadcasts the potential's parameters, so every rank holds identical ones.
    """

    def __init__(self, max_samples: int | None = None, seed: int = 0) -> None:
        self.max_samples, self.seed = max_samples, seed

    @torch.no_grad()
    def _features(self, trainer: L.Trainer, pl_module: L.LightningModule, limit: int) -> torch.Tensor:
        dataset = trainer.datamodule.splits["train"]
        generator = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(len(dataset), generator=generator)[:limit]
        inputs, _ = dataset.__getitems__(index.tolist())
        # Train mode: the potential sees training-mode features (BatchNorm batch statistics) while fitting.
        return torch.cat([pl_module.net.features(chunk.to(pl_module.device)) for chunk in inputs.split(512)])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is not None or pl_module.net.potential.n_steps == 0:
            return
        hp = pl_module.hparams
        limit = self.max_samples or hp.init_samples
        start = time.perf_counter()
        result = None
        if trainer.is_global_zero:
            features = self._features(trainer, pl_module, limit)
            result = initialize_potential(pl_module.net.potential, features, hp.init, limit, self.seed)
        state = trainer.strategy.broadcast(
            {k: v.cpu() for k, v in pl_module.net.potential.state_dict().items()}, src=0
        )
        pl_module.net.potential.load_state_dict(state)
        if result is not None:
            seconds = time.perf_counter() - start
            log.info(
                f"{result.method} init: {result.n_samples} samples, inertia {result.inertia:.4g}, {seconds:.2f}s"
            )
            metrics = {
                "init/inertia": result.inertia,
                "init/samples": result.n_samples,
                "init/seconds": seconds,
            }
            for logger in trainer.loggers:  # self.log() is not available before the first step
                logger.log_metrics(metrics, step=0)
