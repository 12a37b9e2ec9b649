"""FigureLogger: write the DPN figures every N epochs and at the end of fitting, and log them to W&B."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as L
from pytorch_lightning.loggers import WandbLogger

from dpn_lab.viz.report import write_figures

log = logging.getLogger(__name__)
HISTORY_KEYS = ("val/loss", "val/acc", "val/potential_gain")


class FigureLogger(L.Callback):
    """Keeps the per-epoch history for the training curves (saved in checkpoints) and renders figures.

    Figures go to <run>/figures/<kind>_epochNNN.png and <kind>_final.png; with a WandbLogger they are
    logged as images under figures/<kind>, captioned with their epoch.
    """

    def __init__(self, every_n_epochs: int = 10, n_samples: int = 1000, n_paths: int = 60) -> None:
        self.every_n_epochs, self.n_samples, self.n_paths = every_n_epochs, n_samples, n_paths
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._loss_sum, self._loss_count = None, 0

    @property
    def state_key(self) -> str:
        # ours, not derived: `history_in` reads it back (the value Lightning derived before, so older checkpoints
        # are read too)
        return "FigureLogger"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(p) for p in v] for k, v in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}

    @staticmethod
    def history_in(checkpoint: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
        """The per-epoch history a FigureLogger stored in a checkpoint (empty if it was not used)."""
        state = checkpoint.get("callbacks", {}).get(FigureLogger().state_key, {})
        return {k: [tuple(p) for p in v] for k, v in state.get("history", {}).items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # summed on the device: no host sync per step
        loss = outputs["loss"].detach()
        self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
        self._loss_count += 1

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        values = {
            key: float(trainer.callback_metrics[key])
            for key in HISTORY_KEYS
            if key in trainer.callback_metrics
        }
        if self._loss_count:
            values["train/loss"] = float(self._loss_sum) / self._loss_count
        if pl_module.train_acc.update_called:
            values["train/acc"] = float(pl_module.train_acc.compute())
        if pl_module.net.potential.n_steps:
            values["refine/step_size"] = float(pl_module.net.potential.step_sizes().mean())
        self._loss_sum, self._loss_count = None, 0
        for key, value in values.items():
            self.history.setdefault(key, []).append((epoch, value))

    def _render(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int, tag: str) -> None:
        if not trainer.is_global_zero:
            return
        # a fast dev run (debug=fdr) is one batch of everything: the figures' samples too
        n_samples = min(self.n_samples, trainer.datamodule.fast_dev_run_images() or self.n_samples)
        inputs, labels = trainer.datamodule.splits["train"].sample(n_samples, seed=0)
        directory = Path(trainer.default_root_dir) / "figures"
        written = write_figures(
            pl_module.net,
            inputs,
            labels,
            pl_module.hparams.n_classes,
            self.history,
            directory,
            tag,
            self.n_paths,
        )
        log.info(f"figures ({tag}) written to {directory}")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for kind, path in written.items():
                    logger.log_image(
                        key=f"figures/{kind}",
                        images=[str(path)],
                        step=trainer.global_step,
                        caption=[f"epoch {epoch}"],
                    )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation metrics are final here, and Lightning runs checkpoint callbacks after this one, so the
        # history saved with this epoch's checkpoint already holds the epoch.
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        self._record(trainer, pl_module, epoch)
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self._render(trainer, pl_module, epoch, f"epoch{epoch:03d}")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._render(trainer, pl_module, max(trainer.current_epoch - 1, 0), "final")
