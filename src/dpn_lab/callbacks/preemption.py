"""PreemptionCheckpoint: save last.ckpt when Lightning stops a fit because the job received SIGTERM."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as L
from pytorch_lightning.utilities.exceptions import SIGTERMException


class PreemptionCheckpoint(L.Callback):
    """Lightning turns SIGTERM (what SLURM and most schedulers send before killing a job) into a
    SIGTERMException on every rank; this writes `dirpath/last.ckpt` then, so `ckpt_path=last` resumes.

    Only SIGTERM: Lightning's ModelCheckpoint(save_on_exception=True) saves on any exception, and under
    DDP a rank that failed alone would wait forever in the checkpoint's barrier for ranks that never come.
    SLURM's requeue signal (SIGUSR1) is Lightning's own SLURMEnvironment auto-requeue.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.dirpath / "last.ckpt")
