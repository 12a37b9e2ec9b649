"""KMeansInit: place the potential's centers on the training features when fitting starts (and, for
potential_objective tweedie or denoise, convolve the fit with the measured feature noise)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as L
import torch

from dpn_lab.data.corruption import corrupt, seeded_generator
from dpn_lab.errors import ConfigError
from dpn_lab.model.inference import in_chunks
from dpn_lab.model.mixture_init import convolve_with_noise, feature_noise, initialize_potential

log = logging.getLogger(__name__)


class KMeansInit(L.Callback):
    """k-means (or a GMM fit, by the model's `init`) on the features of `model.init_samples` training items.

    Runs when fitting starts, or with `after_epochs=N` after N warm-up epochs of the extractor with the
    refinement switched off. It runs once per training run: a resumed run keeps the centers of its
    checkpoint. Under DDP rank 0 fits and broadcasts the potential's parameters, so every rank holds
    identical ones. Logs init/inertia, init/samples and init/seconds.
    """

    def __init__(self, seed: int = 0, after_epochs: int = 0) -> None:
        if after_epochs < 0:
            raise ConfigError(f"callbacks.kmeans_init.after_epochs={after_epochs} must be >= 0")
        self.seed, self.after_epochs = seed, after_epochs
        self.done = False

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.done = bool(state_dict["done"])

    @torch.no_grad()
    def _features(
        self, trainer: L.Trainer, pl_module: L.LightningModule, limit: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, inputs) of `limit` training items."""
        inputs, _ = trainer.datamodule.splits["train"].sample(limit, self.seed)
        # eval mode: the features the potential will refine at test time, and BatchNorm's running
        # statistics are left as training made them
        return in_chunks(pl_module.net, pl_module.net.features, inputs), inputs

    @torch.no_grad()
    def _measure_noise(self, pl_module: L.LightningModule, inputs: torch.Tensor, clean: torch.Tensor) -> None:
        """The feature noise of noise_pairs, from the same items corrupted once each, convolved into the fitted
        mixture: potential_objective=tweedie with `noise_model`, denoise with the isotropic model (its start is
        then the scalar-step Bayes denoiser, eta = tr(N)/D, which the consistency term trains on)."""
        spec, options = pl_module.options.noise_pairs, pl_module.options
        corrupted = corrupt(
            inputs, spec["kind"], spec["severity"], seeded_generator("noise_model", self.seed)
        )
        noisy = in_chunks(pl_module.net, pl_module.net.features, corrupted)
        model = options.noise_model if options.potential_objective == "tweedie" else "isotropic"
        shift, covariance = feature_noise(clean, noisy, model)
        potential = pl_module.net.potential
        convolve_with_noise(potential, shift.to(potential.mu), covariance.to(potential.mu))
        eigenvalues = torch.linalg.eigvalsh(covariance)
        log.info(
            f"feature noise of {spec['kind']}@{spec['severity']}: |b| {float(shift.norm()):.3g}, tr(N)/D "
            f"{float(covariance.trace()) / len(shift):.3g}, largest eigenvalue {float(eigenvalues[-1]):.3g}"
        )

    def _initialize(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        potential = pl_module.net.potential
        hp = pl_module.hparams
        start = time.perf_counter()
        result = None
        if trainer.is_global_zero:
            features, inputs = self._features(trainer, pl_module, hp.init_samples)
            result = initialize_potential(potential, features, hp.init, self.seed, hp.init_step_limit)
            if pl_module.options.potential_objective in ("tweedie", "denoise") and potential.n_steps:
                self._measure_noise(pl_module, inputs, features)
        state = trainer.strategy.broadcast({k: v.cpu() for k, v in potential.state_dict().items()}, src=0)
        potential.load_state_dict(state)
        potential.active = True
        self.done = True
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
            for logger in trainer.loggers:  # self.log() is not available outside steps and epoch ends
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.net.potential.n_steps == 0:
            self.done = True
        if trainer.ckpt_path is not None and not self.done:
            # a checkpoint written without this callback: its centers are trained, keep them
            self.done = True
        if not self.done and self.after_epochs == 0:
            self._initialize(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done:
            return
        if trainer.current_epoch >= self.after_epochs:
            self._initialize(trainer, pl_module)
        else:
            pl_module.net.potential.active = False
