"""python -m dpn_lab.train [-m] [key=value ...]: train a DPN, test its best checkpoint, measure it under
corruption, and write everything into outputs/train/runs/<date>_<time>_<id>/.

Key options (defaults in brackets; `--cfg job` prints them all):
  data=digits|mnist5k|mnist|fashion_mnist|cifar10|cifar10_synthetic|blobs   [digits, embedded: no download]
  model.n_components=K [16]  model.n_steps=T [5; 0 = the ablation]  model.covariance=diag|full|spherical|lowrank
  recipe=robust_extractor|paired_noise|adversarial|classic|center_tracking|frozen_denoiser
  variant=dpn|ablation|control (frozen_denoiser: tweedie|denoise|density|refit_ablation|denoiser_control)
  trainer.max_epochs [30]  trainer.devices [1]
  logger=csv|wandb|none [csv]  seed [0]  ckpt_path=last (resume the newest run of this data+model+seed)

Examples:
  python -m dpn_lab.train model.n_components=32 trainer.max_epochs=10
  python -m dpn_lab.train -m model.n_steps=0,5 seed=0,1,2      (a sweep: one job per combination)
  python -m dpn_lab.train experiment=robustness_digits          (the comparison: docs/results.md)
"""

from __future__ import annotations

from dpn_lab.runs.preflight import preflight

if __name__ == "__main__":
    preflight("train", __doc__)  # before the imports below, which take seconds: a mistake is one line now

import logging
import os
import signal
from contextlib import nullcontext
from pathlib import Path

import hydra
import pytorch_lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from dpn_lab.checkpoints import check_checkpoint_fits, read_checkpoint, start_from
from dpn_lab.config import validate_config
from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError
from dpn_lab.robustness.suite import report_evaluations
from dpn_lab.runs.instantiate import instantiate_checked, instantiate_group
from dpn_lab.runs.lock import hold_run_directory, is_ddp_child
from dpn_lab.runs.outcome import scalars
from dpn_lab.runs.resolvers import register_resolvers
from dpn_lab.runs.resume import find_last_checkpoint
from dpn_lab.runs.task import command_line, run_task

log = logging.getLogger("dpn_lab.train")
register_resolvers()


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Lightning's ddp re-executes the command once per device. Under --multirun that restarts the sweep
    (local launcher) or runs the launcher's own entry point (submitit_local); only SLURM, where Lightning
    uses the processes srun started, avoids it. ddp_spawn starts its processes without re-executing."""
    devices, strategy = cfg.trainer.get("devices", 1), str(cfg.trainer.get("strategy", "auto"))
    several = devices == "auto" or OmegaConf.is_list(devices) or (isinstance(devices, int) and devices > 1)
    accelerator = cfg.trainer.get("accelerator", "auto")
    if several and accelerator in ("auto", "cpu") and not torch.cuda.is_available() and not is_ddp_child():
        count = devices if isinstance(devices, int) else "several"
        why = "none requested" if accelerator == "cpu" else "none found"
        log.warning(
            f"trainer.devices={devices} without a GPU ({why}): {count} CPU processes share {os.cpu_count()} cores"
        )
    if not (multirun and several and strategy in ("auto", "ddp")):
        return
    if not str(HydraConfig.get().launcher.get("_target_", "")).endswith("SlurmLauncher"):
        raise ConfigError(
            f"trainer.devices={devices} with trainer.strategy={strategy} cannot run under --multirun with this "
            "launcher: use trainer.strategy=ddp_spawn, or hydra/launcher=submitit_slurm with "
            f"hydra.launcher.tasks_per_node={devices}"
        )


def train(cfg: DictConfig, output_dir: Path, multirun: bool = False) -> tuple[dict[str, float], str | None]:
    """seed -> data -> model -> callbacks -> loggers -> trainer -> fit -> test. Returns (metrics, best ckpt)."""
    validate_config(cfg)
    check_launch(cfg, multirun)
    ckpt_path = find_last_checkpoint(cfg, output_dir) if cfg.ckpt_path == "last" else cfg.ckpt_path
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path else None  # refuses files that are not plain data
    if ckpt_path:
        # ModelCheckpoint restores its best-so-far only in the same directory: continue writing there
        with open_dict(cfg):
            cfg.paths.checkpoint_dir = str(Path(ckpt_path).resolve().parent)
        log.info(f"Resuming from {ckpt_path}; checkpoints continue in {cfg.paths.checkpoint_dir}")
    if cfg.seed is not None:
        log.info(f"Seeding everything with seed={cfg.seed}")
        L.seed_everything(cfg.seed, workers=True)
    log.info(f"Building data '{cfg.data.name}' (dpn_lab.data.registry)")
    datamodule = build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
    log.info(f"Instantiating model <{cfg.model._target_}>")
    model = instantiate_checked(
        cfg.model,
        "model",
        input_shape=list(datamodule.input_shape),
        n_classes=datamodule.n_classes,
        _convert_="all",
    )
    if cfg.model.init_from:
        log.info(f"Starting from stage 1: {cfg.model.init_from}")
        start_from(model, cfg.model.init_from, cfg.data)  # refused unless extractor and split match
    log.info("Instantiating callbacks")
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    log.info("Instantiating loggers")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer = instantiate_checked(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if checkpoint:
        check_checkpoint_fits(model, checkpoint, ckpt_path)
    # a second process resuming the same run would write beside this one: refused, naming the holder
    resumed_run = (
        hold_run_directory(Path(cfg.paths.checkpoint_dir), "ckpt_path") if ckpt_path else nullcontext()
    )
    with resumed_run:
        try:
            if cfg.train:
                log.info(f"Fitting{f' (resuming from {ckpt_path})' if ckpt_path else ''}")
                trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
            metrics = scalars(trainer.callback_metrics)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            if cfg.test:
                test_ckpt = best or (None if cfg.train else ckpt_path)
                log.info(f"Testing {test_ckpt or 'the final weights (no checkpoint was saved)'}")
                trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
                metrics.update(scalars(trainer.callback_metrics))
                if cfg.get("eval") and trainer.is_global_zero:
                    metrics.update(report_evaluations(model, datamodule, cfg.eval, output_dir, loggers))
        except BaseException:
            stop_other_ranks(trainer)
            raise
    return metrics, best or None


def stop_other_ranks(trainer: L.Trainer) -> None:
    """When the launching process fails, Lightning leaves the DDP processes it started waiting in a
    collective (until gloo/NCCL time out after 30 minutes): end them now. (A failing child is handled by
    Lightning's own process observer, which ends the rest.)"""
    if trainer.strategy.launcher is not None:
        trainer.strategy.launcher.kill(signal.SIGKILL)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    metrics = run_task(cfg, lambda output_dir, multirun: train(cfg, output_dir, multirun))
    return float("nan") if metrics is None else metrics.get(cfg.optimized_metric)  # NaN: a failed sweep job


if __name__ == "__main__":
    command_line("train", __doc__, hydra_main)
