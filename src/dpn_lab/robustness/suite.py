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
    """Run each evaluation eval_cfg names on the tested weights; their files go to output_dir. Metrics.

    After a fast dev run (debug=fdr: one batch of everything) they run on one batch of each split, and the
    datamodule keeps only that batch: on the full test set, the default corruptions alone put 200,000 CIFAR-10
    images through the network.
    """
    metrics: dict[str, float] = {}
    if not datamodule.splits:  # ddp_spawn set the data up in its worker processes only
        datamodule.setup("test")
    one_batch = datamodule.fast_dev_run_images()
    if one_batch:
        datamodule.keep_first(one_batch)
    if OmegaConf.select(eval_cfg, "corruptions"):
        metrics.update(report_robustness(model, datamodule, eval_cfg, output_dir, loggers))
    if OmegaConf.select(eval_cfg, "attacks"):
        if one_batch:
            images = len(datamodule.splits[eval_cfg.split])
            eval_cfg = OmegaConf.merge(eval_cfg, {"attack_samples": min(eval_cfg.attack_samples, images)})
        n_classes = model.hparams.n_classes
        metrics.update(report_attacks(model.net, datamodule, eval_cfg, n_classes, output_dir, loggers))
    if OmegaConf.select(eval_cfg, "ood"):
        metrics.update(report_ood(model.net, datamodule, eval_cfg, output_dir, loggers))
    return metrics
