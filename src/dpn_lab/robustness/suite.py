"""Every evaluation `eval` asks for, in one call that train (after testing) and eval make: accuracy and
calibration under corruption (eval.corruptions), attacks (eval.attacks), OOD detection (eval.ood)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from dpn_lab.robustness.attacks import report_attacks
from dpn_lab.robustness.evaluate import report_robustness
from dpn_lab.robustness.ood import report_ood


def report_evaluations(
    model, datamodule, eval_cfg, output_dir: Path, loggers: Sequence = ()
) -> dict[str, float]:
    """Run each evaluation eval_cfg names on the tested weights; their files go to output_dir. Metrics."""
    metrics: dict[str, float] = {}
    if not datamodule.splits:  # ddp_spawn set the data up in its worker processes only
        datamodule.setup("test")
    if OmegaConf.select(eval_cfg, "corruptions"):
        metrics.update(report_robustness(model, datamodule, eval_cfg, output_dir, loggers))
    if OmegaConf.select(eval_cfg, "attacks"):
        n_classes = model.hparams.n_classes
        metrics.update(report_attacks(model.net, datamodule, eval_cfg, n_classes, output_dir, loggers))
    if OmegaConf.select(eval_cfg, "ood"):
        metrics.update(report_ood(model.net, datamodule, eval_cfg, output_dir, loggers))
    return metrics
