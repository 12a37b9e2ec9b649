"""DPNLitModule: training, validation and test of a FullArchitecture under Lightning."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import pytorch_lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from dpn_lab.errors import DivergenceError, NonFiniteRefinementError
from dpn_lab.model.extractors import build_extractor
from dpn_lab.model.network import FullArchitecture
from dpn_lab.model.potential import DenoisingPotential, PotentialConfig


class DPNLitModule(L.LightningModule):
    """Cross-entropy on the refined features' logits, plus optional per-step and auxiliary terms.

    loss = CE(logits of x_T) + step_supervision * mean_{t=1..T-1} CE(logits of x_t)
           + aux_loss_weight * CE(logits of x_0)

    `step_supervision` trains every refinement step directly (and the extractor through step 0 even with
    grad_mode=detach); `aux_loss_weight` keeps the unrefined features classifiable on their own.
    `**potential` takes the PotentialConfig fields (feature_dim, n_components, n_steps, ...), flat, as the
    `model.*` keys of the config give them. Hyperparameters are plain values, so checkpoints load with
    weights_only=True; the optimizer and scheduler factories (Hydra `_partial_`) are not stored in them.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        n_classes: int,
        extractor: str = "cnn",
        extractor_kwargs: dict[str, Any] | None = None,
        init: str = "kmeans",
        init_samples: int = 2000,
        step_supervision: float = 0.0,
        aux_loss_weight: float = 0.0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        **potential: Any,
    ) -> None:
        super().__init__()
        config = PotentialConfig(**potential)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams.update(asdict(config))  # every potential argument, defaults included, in checkpoints
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        backbone = build_extractor(
            extractor, tuple(input_shape), config.feature_dim, **(extractor_kwargs or {})
        )
        self.net = FullArchitecture(backbone, DenoisingPotential(config), n_classes)
        # micro: the fraction of correct predictions, what "accuracy" means in a results table
        self.train_acc, self.val_acc, self.test_acc = (
            MulticlassAccuracy(n_classes, average="micro") for _ in range(3)
        )
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_gain, self.test_gain = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _loss_and_logits(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        hp = self.hparams
        states = self.net.states(images)
        logits = self.net.classifier(states[-1])
        loss = F.cross_entropy(logits, labels)
        if hp.step_supervision and len(states) > 2:
            middle = self.net.classifier(torch.stack(states[1:-1]))
            loss = loss + hp.step_supervision * F.cross_entropy(
                middle.flatten(0, 1), labels.repeat(len(states) - 2)
            )
        if hp.aux_loss_weight:
            loss = loss + hp.aux_loss_weight * F.cross_entropy(self.net.classifier(states[0]), labels)
        return loss, logits, states

    @torch.no_grad()
    def _potential_gain(self, states: list[Tensor]) -> Tensor:
        potential = self.net.potential
        return (potential.compute_potential(states[-1]) - potential.compute_potential(states[0])).mean()

    def on_train_start(self) -> None:
        # sanity-check validation must not count towards the best accuracy
        self.val_acc_best.reset()

    def _diverged(self, what: str) -> DivergenceError:
        hp = self.hparams
        lr = getattr(self.optimizer_factory, "keywords", {}).get("lr", "?") if self.optimizer_factory else "?"
        return DivergenceError(
            f"training diverged at epoch {self.current_epoch}, global step {self.global_step}: {what}. Likely "
            f"cause: the learning rate (model.optimizer.lr={lr}) or the refinement step (model.init_step_size="
            f"{hp.init_step_size}, now eta={self.net.potential.step_sizes().max().item() if hp.n_steps else 0:.4g})"
            " is too large; lower it, or set model.bound_step_size=true. Checkpoints on disk are the last finite ones."
        )

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        try:
            loss, logits, _ = self._loss_and_logits(images, labels)
        except NonFiniteRefinementError as error:
            raise self._diverged(str(error).removeprefix("DenoisingPotential: ")) from None
        if not torch.isfinite(loss):
            raise self._diverged(f"the loss is {loss.item()}")
        # update() rather than forward(): the per-batch accuracy would be computed and never logged
        self.train_acc.update(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/acc", self.train_acc, prog_bar=True)
        if self.net.potential.n_steps:
            self.log("refine/step_size", self.net.potential.step_sizes().mean().detach())

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        loss, logits, states = self._loss_and_logits(images, labels)
        acc, mean_loss, gain = (getattr(self, f"{stage}_{name}") for name in ("acc", "loss", "gain"))
        acc.update(logits, labels)
        mean_loss.update(loss)
        gain.update(self._potential_gain(states))
        self.log(f"{stage}/loss", mean_loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, prog_bar=stage == "val")
        self.log(f"{stage}/potential_gain", gain)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer_factory is None:
            raise RuntimeError("DPNLitModule was built without an optimizer: it can evaluate but not train")
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
