"""`ckpt_path=last`: find the newest checkpoint of an earlier run with the same data, model and seed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dpn_lab.config_validation import ConfigError

FINGERPRINT_KEYS = ("data", "model", "seed")


def config_fingerprint(cfg: DictConfig) -> str:
    """A hash of what makes two runs the same experiment (data, model, seed); epochs may differ."""
    part = {
        key: OmegaConf.to_container(cfg[key], resolve=False) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in FINGERPRINT_KEYS
        if key in cfg
    }
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def find_last_checkpoint(cfg: DictConfig, current_run: Path) -> Path:
    """checkpoints/last.ckpt of the newest earlier run of this task whose fingerprint matches cfg."""
    runs_dir = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    wanted = config_fingerprint(cfg)
    candidates = []
    for saved in runs_dir.glob("*/.hydra/config.yaml"):
        run_dir = saved.parent.parent
        last = run_dir / "checkpoints" / "last.ckpt"
        if run_dir.resolve() == current_run.resolve() or not last.is_file():
            continue
        if config_fingerprint(OmegaConf.load(saved)) == wanted:
            candidates.append(last)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no earlier run of this data+model+seed under {runs_dir} has checkpoints/last.ckpt; "
            "start without ckpt_path, or give a checkpoint file"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)
