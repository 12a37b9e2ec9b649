"""A callback for tests: touches a file when training reaches a given batch, so a test can act mid-epoch
on a condition instead of after a guessed sleep."""

from pathlib import Path

import pytorch_lightning as L


class TouchAtBatch(L.Callback):
    def __init__(self, path: str, epoch: int = 1, batch: int = 3) -> None:
        self.path, self.epoch, self.batch = Path(path), epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch and trainer.global_rank == 0:
            self.path.touch()
