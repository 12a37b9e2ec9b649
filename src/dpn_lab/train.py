"""python -m dpn_lab.train [overrides]: train a DPN, test its best checkpoint, report the optimized metric."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dpn_lab.checkpoint_io import check_checkpoint_fits, read_checkpoint
from dpn_lab.cli_errors import USER_ERRORS, check_overrides, exit_on_user_error, one_line
from dpn_lab.config_resolvers import register_resolvers
from dpn_lab.config_validation import validate_config
from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError
from dpn_lab.resume import find_last_checkpoint
from dpn_lab.robustness import evaluate_and_report, markdown_table
from dpn_lab.run_result import format_summary, write_result
from dpn_lab.wandb_setup import finish_wandb, name_runs_by_sweep

log = logging.getLogger("dpn_lab.train")
register_resolvers()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Every `_target_` entry of a callbacks/ or logger/ config group (an empty group gives [])."""
    if not group:
        return []
    return [
        instantiate(entry) for entry in group.values() if OmegaConf.is_dict(entry) and "_target_" in entry
    ]


def check_launch(cfg: DictConfig, multirun: bool) -> None:
    """Lightning's ddp re-executes the command once per device. Under --multirun that restarts the sweep
    (local launcher) or runs the launcher's own entry point (submitit_local); only SLURM, where Lightning
    uses the processes srun started, avoids it. ddp_spawn starts its processes without re-executing."""
    devices, strategy = cfg.trainer.get("devices", 1), str(cfg.trainer.get("strategy", "auto"))
    several = devices == "auto" or OmegaConf.is_list(devices) or (isinstance(devices, int) and devices > 1)
    if not (multirun and several and strategy in ("auto", "ddp")):
        return
    if not str(HydraConfig.get().launcher.get("_target_", "")).endswith("SlurmLauncher"):
        raise ConfigError(
            f"trainer.devices={devices} with trainer.strategy={strategy} cannot run under --multirun with this "
            "launcher: use trainer.strategy=ddp_spawn, or hydra/launcher=submitit_slurm with "
            f"hydra.launcher.tasks_per_node={devices}"
        )


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


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
    log.info(f"Instantiating data <{cfg.data._target_}>")
    datamodule = build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
    log.info(f"Instantiating model <{cfg.model._target_}>")
    model = instantiate(
        cfg.model, input_shape=list(datamodule.input_shape), n_classes=datamodule.n_classes, _convert_="all"
    )
    log.info("Instantiating callbacks")
    callbacks = instantiate_group(cfg.get("callbacks"))
    log.info("Instantiating loggers")
    loggers = instantiate_group(cfg.get("logger"))
    log.info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if checkpoint:
        check_checkpoint_fits(model, checkpoint, ckpt_path)
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
            if OmegaConf.select(cfg, "eval.corruptions") and trainer.is_global_zero:
                metrics.update(report_robustness(model, datamodule, cfg.eval, output_dir, loggers))
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


def report_robustness(
    model, datamodule, eval_cfg: DictConfig, output_dir: Path, loggers: list
) -> dict[str, float]:
    """Accuracy of the tested weights under each corruption level: files, W&B, a printed table, metrics."""
    log.info(f"Robustness: {', '.join(eval_cfg.corruptions)}")
    if not datamodule.splits:  # ddp_spawn set the data up in its worker processes only
        datamodule.setup("test")
    rows = evaluate_and_report(model.net, datamodule, eval_cfg, output_dir, loggers)
    print("\naccuracy under corruption (test set)\n" + markdown_table(rows))
    return {f"robust/{row['corruption']}@{row['severity']:g}": row["accuracy"] for row in rows}


def run_job(cfg: DictConfig) -> float | None:
    job = HydraConfig.get()
    output_dir, overrides = Path(job.runtime.output_dir), list(job.overrides.task)
    multirun = job.mode == RunMode.MULTIRUN
    name_runs_by_sweep(cfg)
    try:
        metrics, best = train(cfg, output_dir, multirun)
    except SIGTERMException:
        # pre-empted: last.ckpt was written (PreemptionCheckpoint); a scheduler must not read this as success
        if rank_zero_only.rank == 0:
            write_result(
                output_dir, "preempted", overrides, {}, "stopped by SIGTERM; resume with ckpt_path=last"
            )
        log.error("stopped by SIGTERM: last.ckpt is saved, resume with ckpt_path=last")
        sys.exit(128 + signal.SIGTERM)
    except Exception as error:
        if rank_zero_only.rank == 0:
            write_result(output_dir, "failed", overrides, {}, one_line(error))
        if not multirun:
            raise
        # a failed job is recorded and the sweep goes on
        log.error(f"job failed: {one_line(error)}")
        if not isinstance(error, USER_ERRORS):
            log.error(traceback.format_exc())
        return float("nan")
    finally:
        finish_wandb()
    if rank_zero_only.rank == 0:
        write_result(output_dir, "ok", overrides, metrics)
        print(format_summary(metrics, output_dir, best))
    return metrics.get(cfg.optimized_metric)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return exit_on_user_error(lambda: run_job(cfg))


def main() -> None:
    """The command line: overrides are checked in one line before Hydra starts the job."""
    exit_on_user_error(lambda: check_overrides("train", sys.argv[1:]))
    hydra_main()


if __name__ == "__main__":
    main()
