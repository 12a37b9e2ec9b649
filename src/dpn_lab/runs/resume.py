"""`ckpt_path=last`: find the newest checkpoint of an earlier run with the same data, model and seed."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dpn_lab.data.registry import IMPORT_KEY, parse_data_record
from dpn_lab.errors import ConfigError
from dpn_lab.model.retired_options import current_options

log = logging.getLogger(__name__)


def config_fingerprint(cfg: DictConfig, source: str = "data") -> str:
    """A hash of what makes two runs the same experiment (data, model, seed); epochs may differ.

    Data enters as its plain record (name and arguments) and the model without the module path of its
    class, so runs made before a module moved still match. A config whose data is not one of dpn_lab's
    data modules raises ConfigError naming `source` (nothing in it is ever instantiated).
    """
    part: dict[str, Any] = {"seed": cfg.get("seed")}
    if cfg.get("data") is not None:
        data_class, args = parse_data_record(OmegaConf.to_container(cfg.data, resolve=False), source)
        part["data"] = {"name": data_class.config_name, "args": args}
    if cfg.get("model") is not None:
        model = OmegaConf.to_container(cfg.model, resolve=False)
        part["model"] = {k: v for k, v in current_options(model, source).items() if k != IMPORT_KEY}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _saved_fingerprint(saved: Path) -> str | None:
    """The fingerprint of an earlier run's .hydra/config.yaml, or None (with a warning) when the file cannot
    be read or describes no dpn_lab data module."""
    try:
        return config_fingerprint(OmegaConf.load(saved), str(saved))
    except (
        ConfigError,
        OmegaConfBaseException,
        yaml.YAMLError,
        OSError,
        ValueError,
        AttributeError,
    ) as error:
        log.warning(f"ckpt_path=last: skipping {saved}: {' '.join(str(error).split())[:200]}")
        return None


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
        if _saved_fingerprint(saved) == wanted:
            candidates.append(last)
    if not candidates:
        raise ConfigError(
            f"ckpt_path=last: no earlier run of this data+model+seed under {runs_dir} has checkpoints/last.ckpt; "
            "start without ckpt_path, or give a checkpoint file"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime)
