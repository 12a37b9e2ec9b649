"""PreemptionCheckpoint: on SIGTERM or SIGINT every rank stops at the same step and last.ckpt is saved."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytorch_lightning as L
import torch

from dpn_lab.errors import RunInterrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionCheckpoint(L.Callback):
    """SIGTERM (what SLURM and most schedulers send before killing a job) and SIGINT (Ctrl-C) only set a
    flag while training; after each training step the ranks agree on it (one max all-reduce of an int under
    DDP; nothing at all in a single process), save `dirpath/last.ckpt` together mid-epoch, and raise
    RunInterrupted, which the task wrapper turns into result.json and exit status 128 + signal.

    This replaces Lightning's own SIGTERM handling, which raises on the signalled rank alone and leaves the
    others waiting in a collective until they are killed. A second signal stops at once, unsaved.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.requested = 0
        self._previous: dict[int, object] = {}

    def _request(self, signum: int, _frame) -> None:
        if self.requested:
            raise RunInterrupted(signum)
        self.requested = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning registered its handlers (between on_fit_start and here); it restores the ones it
        # found when fitting ends
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._request) for s in STOP_SIGNALS}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        requested = self.requested
        if trainer.world_size > 1:
            flag = torch.tensor([requested], device=pl_module.device)
            requested = int(trainer.strategy.reduce(flag, reduce_op="max"))
        if requested:
            path = self.dirpath / "last.ckpt"
            trainer.save_checkpoint(path)  # every rank calls it: the save has a barrier inside
            self.on_train_end(trainer, pl_module)
            raise RunInterrupted(requested, str(path))
