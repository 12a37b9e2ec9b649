"""python -m dpn_lab.eval ckpt_path=PATH [data=...]: test a trained checkpoint.

The checkpoint is read with torch.load(weights_only=True) (dpn_lab.checkpoint_io.read_checkpoint), so a checkpoint from someone else cannot run
code. Model and (unless `data=` is given) data are rebuilt from what the checkpoint stores.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import pytorch_lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from dpn_lab.checkpoint_io import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint
from dpn_lab.cli_errors import check_overrides, exit_on_user_error
from dpn_lab.config_resolvers import register_resolvers
from dpn_lab.config_validation import validate_config
from dpn_lab.data.registry import build_data_module
from dpn_lab.run_result import format_summary, write_result
from dpn_lab.train import instantiate_group, report_robustness, scalars
from dpn_lab.wandb_setup import finish_wandb

log = logging.getLogger("dpn_lab.eval")
register_resolvers()


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """load checkpoint -> data -> model -> trainer -> test. Returns the test metrics."""
    validate_config(cfg, for_eval=True)
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info(f"Loading checkpoint {cfg.ckpt_path}")
    checkpoint = read_checkpoint(cfg.ckpt_path)
    datamodule = (
        build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
        if cfg.get("data")
        else data_module_from_checkpoint(checkpoint, cfg.ckpt_path)
    )
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path)
    loggers = instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = scalars(trainer.callback_metrics)
    if cfg.eval.corruptions:
        metrics.update(report_robustness(model, datamodule, cfg.eval, output_dir, loggers))
    return metrics


def run_eval(cfg: DictConfig) -> dict[str, float]:
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = evaluate(cfg, output_dir)
    finally:
        finish_wandb()
    if rank_zero_only.rank == 0:
        write_result(output_dir, "ok", list(HydraConfig.get().overrides.task), metrics)
        print(format_summary(metrics, output_dir, None))
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    exit_on_user_error(lambda: run_eval(cfg))


def main() -> None:
    """The command line: overrides are checked in one line before Hydra starts the job."""
    exit_on_user_error(lambda: check_overrides("eval", sys.argv[1:]))
    hydra_main()


if __name__ == "__main__":
    main()
