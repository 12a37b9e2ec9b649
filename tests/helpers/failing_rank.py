"""A callback for tests: one DDP rank raises while training."""

import pytorch_lightning as L


class FailOnRank(L.Callback):
    def __init__(self, rank: int, at_batch: int = 3) -> None:
        self.rank, self.at_batch = rank, at_batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and batch_idx == self.at_batch:
            raise RuntimeError(f"rank {self.rank} failed on purpose")
