"""Validation of a composed config before any work starts: one line per mistake, naming key and allowed values."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dpn_lab.data.corruption import CORRUPTIONS
from dpn_lab.errors import ConfigError
from dpn_lab.model.extractors import CNN_NORMS, CNN_POOLS, EXTRACTORS, extractor_arguments
from dpn_lab.model.lit_module import CENTER_UPDATES
from dpn_lab.model.mixture_init import INIT_METHODS
from dpn_lab.model.potential import GRAD_MODES, GRADIENT_IMPLS, PRECISIONS, STEP_SIZES
from dpn_lab.robustness.evaluate import EVAL_SPLITS


@dataclass(frozen=True)
class Choice:
    allowed: tuple[Any, ...]

    def check(self, value: Any) -> str | None:
        # type-strict: 0 == False and 1 == True in Python, but 0 is no answer to a true/false key
        if not any(type(value) is type(a) and value == a for a in self.allowed):
            return "is not allowed; choose one of: " + ", ".join(str(a) for a in self.allowed)
        return None


@dataclass(frozen=True)
class Number:
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value instead of low <= value
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        kind = "an integer" if self.integer else "a number"
        return f"{kind} {' and '.join(parts)}".strip() + (" or null" if self.nullable else "")

    def check(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        wrong_type = isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float))
        if wrong_type:
            return f"has the wrong type: must be {self.describe()}"
        if not math.isfinite(value):
            return f"is not finite: must be {self.describe()}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"is out of range: must be {self.describe()}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"is out of range: must be {self.describe()}"
        return None


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
PRECISION_PLUGINS = (
    "32-true",
    "32",
    32,
    "16-mixed",
    "bf16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "64",
    64,
)

MODEL_RULES: dict[str, Choice | Number] = {
    "model.extractor": Choice(tuple(EXTRACTORS)),
    "model.precision": Choice(PRECISIONS),
    "model.grad_mode": Choice(GRAD_MODES),
    "model.gradient_impl": Choice(GRADIENT_IMPLS),
    "model.step_size": Choice(STEP_SIZES),
    "model.init": Choice(INIT_METHODS),
    "model.feature_dim": Number(integer=True, low=1),
    "model.n_components": Number(integer=True, low=1),
    "model.n_steps": Number(integer=True, low=0),
    "model.rank": Number(integer=True, low=1),
    "model.init_step_size": Number(low=0, low_open=True),
    "model.init_precision": Number(low=0, low_open=True),
    "model.langevin_temperature": Number(low=0),
    "model.init_samples": Number(integer=True, low=1),
    "model.step_supervision": Number(low=0),
    "model.aux_loss_weight": Number(low=0),
    "model.checkpoint_steps": Choice((True, False)),
    "model.bound_step_size": Choice((True, False)),
    "model.extractor_kwargs.norm": Choice(CNN_NORMS),
    "model.extractor_kwargs.pool": Choice(CNN_POOLS),
    "model.consistency_weight": Number(low=0),
    "model.center_update": Choice(CENTER_UPDATES),
    "model.center_momentum": Number(low=0, high=1, high_open=True),
    "model.init_step_limit": Number(low=0, low_open=True, nullable=True),
}
DATA_RULES: dict[str, Choice | Number] = {
    "data.batch_size": Number(integer=True, low=1),
    "data.val_fraction": Number(low=0, high=1, low_open=True, high_open=True),
    "data.test_fraction": Number(low=0, high=1, low_open=True, high_open=True),
    "data.split_seed": Number(integer=True, low=0),
    "data.num_workers": Number(integer=True, low=0),
    "data.download": Choice((True, False)),
}
TRAINER_RULES: dict[str, Choice | Number] = {
    "trainer.accelerator": Choice(ACCELERATORS),
    "trainer.precision": Choice(PRECISION_PLUGINS),
    "trainer.max_epochs": Number(integer=True, low=1),
    "trainer.num_nodes": Number(integer=True, low=1),
}
TOP_RULES: dict[str, Choice | Number] = {"seed": Number(integer=True, low=0, nullable=True)}


def _check_rules(cfg: DictConfig, rules: dict[str, Choice | Number]) -> None:
    for key, rule in rules.items():
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            continue
        value = OmegaConf.select(cfg, key)
        problem = rule.check(value)
        if problem:
            raise ConfigError(f"{key}={value!r} {problem}")


def _check_devices(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "trainer") is None:
        return
    devices = OmegaConf.select(cfg, "trainer.devices")
    if devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1):
        pass
    elif not (OmegaConf.is_list(devices) and all(isinstance(d, int) and d >= 0 for d in devices)):
        raise ConfigError(
            f"trainer.devices={devices!r} is not allowed: use a count >= 1, a list of GPU ids, or auto"
        )
    if OmegaConf.select(cfg, "trainer.accelerator") in ("gpu", "cuda"):
        import torch

        available = torch.cuda.device_count()
        wanted = len(devices) if OmegaConf.is_list(devices) else (available if devices == "auto" else devices)
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible: use "
                "trainer.accelerator=auto or cpu"
            )
        if wanted > available:
            raise ConfigError(f"trainer.devices={devices} but only {available} CUDA device(s) are visible")


def _check_model_consistency(cfg: DictConfig) -> None:
    model = cfg.model
    if model.precision == "lowrank" and model.rank > model.feature_dim:
        raise ConfigError(
            f"model.rank={model.rank} is out of range: must be <= model.feature_dim={model.feature_dim}"
        )
    if model.n_components > model.init_samples:
        raise ConfigError(
            f"model.n_components={model.n_components} is out of range: must be <= model.init_samples="
            f"{model.init_samples} (k-means needs a sample per center)"
        )


def _check_extractor_kwargs(cfg: DictConfig) -> None:
    kwargs = OmegaConf.select(cfg, "model.extractor_kwargs")
    if kwargs is None:
        return
    if not OmegaConf.is_dict(kwargs):
        raise ConfigError(
            f"model.extractor_kwargs={kwargs!r} is not allowed: use a mapping, e.g. {{norm: batch}}"
        )
    accepted = list(extractor_arguments(cfg.model.extractor))
    for key in kwargs:
        if key not in accepted:
            raise ConfigError(
                f"model.extractor_kwargs.{key} is not allowed for model.extractor={cfg.model.extractor}; "
                f"it takes: {', '.join(accepted)}"
            )
    for key in ("channels", "hidden"):
        widths = kwargs.get(key)
        if widths is not None and not (
            OmegaConf.is_list(widths) and widths and all(type(w) is int and w >= 1 for w in widths)
        ):
            raise ConfigError(
                f"model.extractor_kwargs.{key}={widths!r} is not allowed: use a non-empty list of integers >= 1"
            )


def _check_corruption(cfg: DictConfig, key: str) -> None:
    spec = OmegaConf.select(cfg, key)
    if spec is None:
        return
    if not OmegaConf.is_dict(spec) or set(spec) != {"kind", "severity"}:
        raise ConfigError(f"{key}={spec!r} is not allowed: use null or {{kind: ..., severity: ...}}")
    _check_rules(cfg, {f"{key}.kind": Choice(tuple(CORRUPTIONS))})
    _check_rules(cfg, {f"{key}.severity": Number(low=0, high=CORRUPTIONS[spec.kind].max_severity)})


def _check_robustness(cfg: DictConfig) -> None:
    kinds = OmegaConf.select(cfg, "eval.corruptions")
    if kinds is None:
        return
    if not OmegaConf.is_list(kinds):
        raise ConfigError(
            f"eval.corruptions={kinds!r} is not allowed: use a list of {', '.join(CORRUPTIONS)}"
        )
    for i, kind in enumerate(kinds):
        _check_rules(cfg, {f"eval.corruptions.{i}": Choice(tuple(CORRUPTIONS))})
        levels = OmegaConf.select(cfg, f"eval.levels.{kind}")
        if not OmegaConf.is_list(levels) or not levels:
            raise ConfigError(
                f"eval.levels.{kind}={levels!r} is not allowed: use a non-empty list of severities"
            )
        for j in range(len(levels)):
            _check_rules(cfg, {f"eval.levels.{kind}.{j}": Number(low=0, high=CORRUPTIONS[kind].max_severity)})
    _check_rules(cfg, {"eval.seed": Number(integer=True, low=0), "eval.split": Choice(EVAL_SPLITS)})
    steps = OmegaConf.select(cfg, "eval.test_steps")
    if steps is not None and not (
        OmegaConf.is_list(steps) and all(type(t) is int and t >= 0 for t in steps) and len(steps) > 0
    ):
        raise ConfigError(
            f"eval.test_steps={steps!r} is not allowed: use null or a non-empty list of integers >= 0, e.g. [0,1,2,5,10,20]"
        )


def _check_ckpt_path(cfg: DictConfig, required: bool) -> None:
    ckpt = OmegaConf.select(cfg, "ckpt_path")
    if ckpt is None and not required:
        return
    if ckpt == "last" and not required:
        return
    if not isinstance(ckpt, str) or not Path(ckpt).is_file():
        allowed = "an existing checkpoint file" + ("" if required else ", last, or null")
        raise ConfigError(f"ckpt_path={ckpt!r} is not allowed: must be {allowed}")


def validate_config(cfg: DictConfig, for_eval: bool = False) -> None:
    """Raise ConfigError for the first invalid value of a train (or eval) config."""
    checks: list[Callable[[], None]] = [
        lambda: _check_rules(cfg, TOP_RULES),
        lambda: _check_rules(cfg, DATA_RULES),
        lambda: _check_corruption(cfg, "data.train_corruption"),
        lambda: _check_corruption(cfg, "data.test_corruption"),
        lambda: _check_rules(cfg, TRAINER_RULES),
        lambda: _check_devices(cfg),
        lambda: _check_robustness(cfg),
        lambda: _check_ckpt_path(cfg, required=for_eval),
    ]
    if not for_eval:
        checks[1:1] = [
            lambda: _check_rules(cfg, MODEL_RULES),
            lambda: _check_extractor_kwargs(cfg),
            lambda: _check_model_consistency(cfg),
            lambda: _check_corruption(cfg, "model.noise_pairs"),
        ]
    for check in checks:
        check()
