"""python -m dpn_lab.eval ckpt_path=PATH [key=value ...]: test a trained checkpoint, then its accuracy and
uncertainty under every corruption listed in eval.corruptions; writes outputs/eval/runs/<run>/.

The checkpoint is read as plain data (torch.load with weights_only=True), so a checkpoint from someone else
cannot run code. Model and (unless data= is given) data are rebuilt from what it stores.

Key options:
  ckpt_path=PATH (required)   data=... (test on other data)   robustness@eval=default|gaussian|none
  eval.attacks=[pgd_linf,pgd_l2,square_linf] eval.attack_eps.pgd_linf=[0.05,0.1]   (adversarial accuracy)
  eval.split=test|val   eval.test_steps=[0,1,5,20] (vary the refinement steps at test time)   logger=wandb

Example:
  python -m dpn_lab.eval ckpt_path=outputs/train/runs/<run>/checkpoints/epoch_009.ckpt eval.split=val
"""

from __future__ import annotations

from dpn_lab.runs.preflight import preflight

if __name__ == "__main__":
    preflight("eval", __doc__)  # before the imports below, which take seconds: a mistake is one line now

import logging
from pathlib import Path

import hydra
import pytorch_lightning as L
from omegaconf import DictConfig

from dpn_lab.checkpoints import data_module_from_checkpoint, model_from_checkpoint, read_checkpoint
from dpn_lab.config import validate_config
from dpn_lab.robustness.suite import report_evaluations
from dpn_lab.runs.instantiate import instantiate_checked, instantiate_group
from dpn_lab.runs.outcome import scalars
from dpn_lab.runs.resolvers import register_resolvers
from dpn_lab.runs.task import command_line, run_task

log = logging.getLogger("dpn_lab.eval")
register_resolvers()


def evaluate(cfg: DictConfig, output_dir: Path) -> tuple[dict[str, float], None]:
    """load checkpoint -> data -> model -> trainer -> test -> corruptions, attacks, OOD. Returns (test metrics, None)."""
    validate_config(cfg, "eval")
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True)
    log.info(f"Loading checkpoint {cfg.ckpt_path}")
    checkpoint = read_checkpoint(cfg.ckpt_path)
    datamodule = data_module_from_checkpoint(checkpoint, cfg.ckpt_path, cfg.get("data"))
    model = model_from_checkpoint(checkpoint, cfg.ckpt_path)
    loggers = instantiate_group(cfg.get("logger"), "logger")
    trainer = instantiate_checked(cfg.trainer, "trainer", logger=loggers or False, callbacks=[])
    trainer.test(model, datamodule=datamodule)
    metrics = scalars(trainer.callback_metrics)
    metrics.update(report_evaluations(model, datamodule, cfg.eval, output_dir, loggers))
    return metrics, None


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def hydra_main(cfg: DictConfig) -> None:
    run_task(cfg, lambda output_dir, _: evaluate(cfg, output_dir))


if __name__ == "__main__":
    command_line("eval", __doc__, hydra_main)
