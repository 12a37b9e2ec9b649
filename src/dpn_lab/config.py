"""Validation of a composed config before any work starts: one line per mistake, naming key and allowed values."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dpn_lab.data.augment import AUGMENTS
from dpn_lab.data.corruption import CORRUPTIONS
from dpn_lab.data.sources import SOURCES, classes_problem
from dpn_lab.errors import ConfigError
from dpn_lab.model.options import (
    EXTRACTOR_KWARG_RULES,
    IMAGE_EXTRACTORS,
    MIN_RESNET_SIDE,
    PotentialConfig,
    TrainingConfig,
    potential_problem,
    rules,
    training_problem,
)
from dpn_lab.robustness.attacks import ATTACKS, GRADIENTS
from dpn_lab.robustness.ood import OOD_SETS, ood_set_problem
from dpn_lab.rules import Choice, Number

EVAL_SPLITS = ("test", "val")
CONF_DIR = Path(str(files("dpn_lab.conf")))


ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
# bf16-true and 16-true are left out: the mixture's linear algebra (slogdet, eigenvalues) has no half kernels
PRECISION_PLUGINS = ("32-true", "32", 32, "64-true", "64", 64, "bf16-mixed", "16-mixed")
GPU_ONLY_PRECISIONS = ("16-mixed",)
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_find_unused_parameters_true")
# what ModelCheckpoint and EarlyStopping can monitor: DPNLitModule logs these at every validation epoch end
MONITORABLE = ("val/acc", "val/loss", "val/acc_best", "val/potential_gain")

MODEL_RULES: dict[str, Choice | Number] = {
    **rules(PotentialConfig, TrainingConfig),
    **{f"model.extractor_kwargs.{name}": rule for name, rule in EXTRACTOR_KWARG_RULES.items()},
    "model.optimizer.lr": Number(low=0, low_open=True),
    "model.optimizer.weight_decay": Number(low=0),
    "model.scheduler.T_max": Number(integer=True, low=1),
}
DATA_RULES: dict[str, Choice | Number] = {
    "data.batch_size": Number(integer=True, low=1),
    "data.val_fraction": Number(low=0, high=1, low_open=True, high_open=True),
    "data.test_fraction": Number(low=0, high=1, low_open=True, high_open=True),
    "data.split_seed": Number(integer=True, low=0),
    "data.num_workers": Number(integer=True, low=0),
    "data.download": Choice((True, False)),
    "data.augment": Choice(AUGMENTS),
    "data.augment_padding": Number(integer=True, low=0),
}
TRAINER_RULES: dict[str, Choice | Number] = {
    "trainer.accelerator": Choice(ACCELERATORS),
    "trainer.precision": Choice(PRECISION_PLUGINS),
    "trainer.strategy": Choice(STRATEGIES),
    "trainer.max_epochs": Number(integer=True, low=1),
    "trainer.min_epochs": Number(integer=True, low=0, nullable=True),
    "trainer.num_nodes": Number(integer=True, low=1),
    "trainer.check_val_every_n_epoch": Number(integer=True, low=1, nullable=True),
    "trainer.log_every_n_steps": Number(integer=True, low=1),
    "trainer.gradient_clip_val": Number(low=0, nullable=True),
    "trainer.accumulate_grad_batches": Number(integer=True, low=1),
    "trainer.deterministic": Choice((True, False, "warn")),
}
CALLBACK_RULES: dict[str, Choice | Number] = {
    "callbacks.model_checkpoint.monitor": Choice(MONITORABLE),
    "callbacks.model_checkpoint.mode": Choice(("min", "max")),
    "callbacks.model_checkpoint.save_top_k": Number(integer=True, low=-1),
    "callbacks.early_stopping.monitor": Choice(MONITORABLE),
    "callbacks.early_stopping.patience": Number(integer=True, low=0),
    "callbacks.kmeans_init.after_epochs": Number(integer=True, low=0),
    "callbacks.kmeans_init.seed": Number(integer=True, low=0),
    "callbacks.figures.every_n_epochs": Number(integer=True, low=0),
    "callbacks.figures.n_samples": Number(integer=True, low=2),
    "callbacks.figures.n_paths": Number(integer=True, low=0),
}
ANALYZE_RULES: dict[str, Choice | Number] = {
    "n_samples": Number(integer=True, low=2),
    "n_paths": Number(integer=True, low=0),
}
SWEEPER_RULES: dict[str, Choice | Number] = {
    "hydra.sweeper.n_trials": Number(integer=True, low=1),
    "hydra.sweeper.n_jobs": Number(integer=True, low=1),
}
EVAL_RULES: dict[str, Choice | Number] = {
    "eval.seed": Number(integer=True, low=0),
    "eval.split": Choice(EVAL_SPLITS),
    "eval.figures": Choice((True, False)),
    "eval.attack_steps": Number(integer=True, low=1),
    "eval.attack_step_size": Number(low=0, low_open=True),
    "eval.attack_restarts": Number(integer=True, low=1),
    "eval.attack_queries": Number(integer=True, low=1),
    "eval.attack_samples": Number(integer=True, low=1),
    "eval.masking_eps": Number(low=0, high=1, low_open=True),
}
TOP_RULES: dict[str, Choice | Number] = {"seed": Number(integer=True, low=0, nullable=True)}
# classes a command line may name as model.optimizer / model.scheduler (by module path prefix)
TARGET_PREFIXES = {
    "model.optimizer._target_": "torch.optim.",
    "model.scheduler._target_": "torch.optim.lr_scheduler.",
}
# bytes per potential parameter while training: weight, gradient and AdamW's two moments (float32)
BYTES_PER_PARAMETER = 16


def _check_rules(cfg: DictConfig, rules: dict[str, Choice | Number]) -> None:
    for key, rule in rules.items():
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            continue
        rule.require(key, OmegaConf.select(cfg, key))


def _check_devices(cfg: DictConfig) -> None:
    if OmegaConf.select(cfg, "trainer") is None:
        return
    devices = OmegaConf.select(cfg, "trainer.devices")
    if devices == "auto" or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1):
        pass
    elif not (OmegaConf.is_list(devices) and devices and all(type(d) is int and d >= 0 for d in devices)):
        raise ConfigError(
            f"trainer.devices={devices!r} is not allowed: use a count >= 1, a list of GPU ids, or auto"
        )
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    precision = OmegaConf.select(cfg, "trainer.precision")
    if precision in GPU_ONLY_PRECISIONS and accelerator not in ("gpu", "cuda"):
        raise ConfigError(
            f"trainer.precision={precision} needs trainer.accelerator=gpu; on CPU use 32-true, 64-true or bf16-mixed"
        )
    if accelerator in ("gpu", "cuda"):
        import torch  # only here: counting CUDA devices needs it

        available = torch.cuda.device_count()
        wanted = len(devices) if OmegaConf.is_list(devices) else (available if devices == "auto" else devices)
        if available == 0:
            raise ConfigError(
                f"trainer.accelerator={cfg.trainer.accelerator} but no CUDA device is visible: use "
                "trainer.accelerator=auto or cpu"
            )
        if wanted > available:
            raise ConfigError(f"trainer.devices={devices} but only {available} CUDA device(s) are visible")


def _check_model_keys(cfg: DictConfig) -> None:
    """A key added to model (+model.x=...) that is neither in conf/model/dpn.yaml nor a field of the model's
    option dataclasses is no model option."""
    yaml_keys = OmegaConf.load(CONF_DIR / "model" / "dpn.yaml")
    known = [f.name for c in (PotentialConfig, TrainingConfig) for f in fields(c)]
    known += [key for key in yaml_keys if key != "defaults"]
    for key in cfg.model:
        if key not in known:
            raise ConfigError(
                f"model.{key} is not a model option; the options are: {', '.join(k for k in known if k != '_target_')}"
            )
    for key, prefix in TARGET_PREFIXES.items():
        target = OmegaConf.select(cfg, key)
        if target is not None and not (isinstance(target, str) and target.startswith(prefix)):
            raise ConfigError(f"{key}={target!r} is not allowed: name a class under {prefix}")


def _check_model_size(cfg: DictConfig) -> None:
    """Refuse a potential that could not be allocated here, before anything is allocated."""
    model = cfg.model
    per_component = {"full": model.feature_dim, "lowrank": model.rank + 2, "diag": 2, "spherical": 1}
    parameters = model.n_components * (model.feature_dim * per_component[model.covariance] + 1)
    needed = parameters * BYTES_PER_PARAMETER
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise ConfigError(
            f"model.n_components={model.n_components} x model.feature_dim={model.feature_dim} "
            f"(covariance {model.covariance}) needs about {needed / 2**30:.0f} GiB to train the potential alone; "
            f"this machine has {memory / 2**30:.0f} GiB"
        )


def _check_model_consistency(cfg: DictConfig) -> None:
    model = cfg.model
    if model.init_from is not None and not (isinstance(model.init_from, str) and model.init_from):
        raise ConfigError(
            f"model.init_from={model.init_from!r} is not allowed: use a checkpoint path or null"
        )
    spec = model.noise_pairs
    attack = OmegaConf.is_dict(spec) and spec.get("kind") in ATTACKS
    problem = potential_problem(model) or training_problem(model, attack)
    if problem:
        raise ConfigError(f"model.{problem}")
    if model.n_components > model.init_samples:
        raise ConfigError(
            f"model.n_components={model.n_components} is out of range: must be <= model.init_samples="
            f"{model.init_samples} (k-means needs a sample per center)"
        )


def _select_container(cfg: DictConfig, key: str, mapping: bool, use: str) -> Any:
    """cfg's value at key: None, or a mapping (mapping=True) or list; anything else is refused with `use`."""
    value = OmegaConf.select(cfg, key)
    if value is not None and not (OmegaConf.is_dict(value) if mapping else OmegaConf.is_list(value)):
        raise ConfigError(f"{key}={value!r} is not allowed: use {use}")
    return value


def _check_extractor_kwargs(cfg: DictConfig) -> None:
    kwargs = _select_container(cfg, "model.extractor_kwargs", True, "a mapping, e.g. {norm: batch}")
    if not kwargs:
        return
    from dpn_lab.model.extractors import extractor_arguments  # torch: only when arguments are given

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


def _check_extractor_data(cfg: DictConfig) -> None:
    """An image extractor needs image data, a ResNet sides of at least MIN_RESNET_SIDE (8: the digits run)."""
    name, extractor = OmegaConf.select(cfg, "data.name"), cfg.model.extractor
    if name not in SOURCES or extractor not in IMAGE_EXTRACTORS:
        return
    shape = SOURCES[name].input_shape
    if shape is None or len(shape) != 3:
        raise ConfigError(
            f"model.extractor={extractor} is not possible with data={name}: its inputs are flat vectors, not "
            "images; use model.extractor=mlp"
        )
    if extractor.startswith("resnet") and min(shape[1:]) < MIN_RESNET_SIDE:
        raise ConfigError(
            f"model.extractor={extractor} is not possible with data={name}: its {shape[1]}x{shape[2]} images are "
            f"below the {MIN_RESNET_SIDE}x{MIN_RESNET_SIDE} that three stride-2 stages need; use model.extractor=cnn"
        )


def _check_augment(cfg: DictConfig) -> None:
    augment, name = OmegaConf.select(cfg, "data.augment"), OmegaConf.select(cfg, "data.name")
    if augment not in (None, "none") and name in SOURCES and not SOURCES[name].pixel_range:
        raise ConfigError(
            f"data.augment={augment} is not possible with data={name}: its inputs are no images; use none"
        )


def _check_corruption(cfg: DictConfig, key: str) -> None:
    use = "null or {kind: ..., severity: ...}"
    spec = _select_container(cfg, key, True, use)
    if spec is None:
        return
    if set(spec) != {"kind", "severity"}:
        raise ConfigError(f"{key}={spec!r} is not allowed: use {use}")
    _check_rules(cfg, {f"{key}.kind": Choice(tuple(CORRUPTIONS))})
    _check_rules(cfg, {f"{key}.severity": Number(low=0, high=CORRUPTIONS[spec.kind].max_severity)})


def _check_noise_pairs(cfg: DictConfig) -> None:
    """A corruption spec, or an attack {kind, severity: eps, steps (optional)} for adversarial pairs."""
    key = "model.noise_pairs"
    spec = OmegaConf.select(cfg, key)
    if OmegaConf.is_dict(spec) and spec.get("kind") not in (*CORRUPTIONS, *ATTACKS):
        _check_rules(cfg, {f"{key}.kind": Choice((*CORRUPTIONS, *ATTACKS))})
    if not (OmegaConf.is_dict(spec) and spec.get("kind") in ATTACKS):
        _check_corruption(cfg, key)
        return
    if not {"kind", "severity"} <= set(spec) <= {"kind", "severity", "steps"}:
        raise ConfigError(
            f"{key}={spec!r} is not allowed: use {{kind: {spec.kind}, severity: <eps>, steps: <int>}}"
        )
    _check_rules(cfg, {f"{key}.severity": Number(low=0, low_open=True, high=ATTACKS[spec.kind].max_eps)})
    _check_rules(cfg, {f"{key}.steps": Number(integer=True, low=1)})


def _check_kinds_and_levels(cfg: DictConfig, key: str, registry: dict, levels_key: str, what: str) -> Any:
    """cfg's `key`, a list of `registry` kinds, each with a non-empty list `levels_key.<kind>` of numbers
    from 0 to the kind's largest allowed value (`max_severity` or `max_eps`). Returns the list (or None)."""
    kinds = _select_container(cfg, key, False, f"a list of {', '.join(registry)}")
    for i, kind in enumerate(kinds or []):
        _check_rules(cfg, {f"{key}.{i}": Choice(tuple(registry))})
        levels = OmegaConf.select(cfg, f"{levels_key}.{kind}")
        if not OmegaConf.is_list(levels) or not levels:
            raise ConfigError(
                f"{levels_key}.{kind}={levels!r} is not allowed: use a non-empty list of {what}"
            )
        high = getattr(registry[kind], "max_severity", getattr(registry[kind], "max_eps", None))
        for j in range(len(levels)):
            _check_rules(cfg, {f"{levels_key}.{kind}.{j}": Number(low=0, high=high)})
    return kinds


def _check_robustness(cfg: DictConfig) -> None:
    if _check_kinds_and_levels(cfg, "eval.corruptions", CORRUPTIONS, "eval.levels", "severities") is None:
        return
    steps = OmegaConf.select(cfg, "eval.test_steps")
    if steps is not None and not (
        OmegaConf.is_list(steps) and all(type(t) is int and t >= 0 for t in steps) and len(steps) > 0
    ):
        raise ConfigError(
            f"eval.test_steps={steps!r} is not allowed: use null or a non-empty list of integers >= 0, e.g. [0,1,2,5,10,20]"
        )


def _check_attacks(cfg: DictConfig) -> None:
    if not _check_kinds_and_levels(cfg, "eval.attacks", ATTACKS, "eval.attack_eps", "radii"):
        return
    gradients = _select_container(cfg, "eval.attack_gradient", False, f"a list of {', '.join(GRADIENTS)}")
    if not gradients:
        raise ConfigError(
            f"eval.attack_gradient={gradients!r} is not allowed: use a non-empty list of {', '.join(GRADIENTS)}"
        )
    for i in range(len(gradients)):
        _check_rules(cfg, {f"eval.attack_gradient.{i}": Choice(GRADIENTS)})


def _source_classes(cfg: DictConfig) -> int | None:
    """The number of labels of the configured data source (None: not known before it loads)."""
    name = OmegaConf.select(cfg, "data.name")
    if name not in SOURCES:
        return None
    return SOURCES[name].n_classes or OmegaConf.select(cfg, "data.n_classes")


def _check_classes(cfg: DictConfig) -> None:
    classes = OmegaConf.select(cfg, "data.classes")
    if classes is None:
        return
    plain = OmegaConf.to_container(classes) if OmegaConf.is_list(classes) else classes
    problem = classes_problem(plain, _source_classes(cfg))
    if problem:
        raise ConfigError(f"data.classes={classes!r} {problem}")


def _check_ood(cfg: DictConfig, command: str) -> None:
    sets = _select_container(cfg, "eval.ood", False, f"a list of {', '.join(OOD_SETS)}")
    name = OmegaConf.select(cfg, "data.name")
    for i, ood_set in enumerate(sets or []):
        _check_rules(cfg, {f"eval.ood.{i}": Choice(OOD_SETS)})
        if command == "train" and name in SOURCES:  # eval's data come from the checkpoint: checked there
            problem = ood_set_problem(
                ood_set, name, OmegaConf.select(cfg, "data.classes"), _source_classes(cfg)
            )
            if problem:
                raise ConfigError(f"eval.ood={ood_set} is not possible with data={name}: it {problem}")


def _check_ckpt_path(cfg: DictConfig, required: bool) -> None:
    ckpt = OmegaConf.select(cfg, "ckpt_path")
    if ckpt is None and not required:
        return
    if ckpt == "last" and not required:
        return
    if ckpt is None:
        raise ConfigError(
            "ckpt_path is required: ckpt_path=outputs/train/runs/<run>/checkpoints/<file>.ckpt (a train run "
            "prints its best checkpoint; ls outputs/train/runs/*/checkpoints lists them)"
        )
    if not isinstance(ckpt, str) or not Path(ckpt).is_file():
        allowed = "an existing checkpoint file" + ("" if required else ", last, or null")
        raise ConfigError(f"ckpt_path={ckpt!r} is not allowed: must be {allowed}")


COMMANDS = ("train", "eval", "analyze")


def command_rules(command: str) -> dict[str, Choice | Number]:
    """The rule of every single key `command` reads, in the order they are checked (trainer first:
    model.scheduler.T_max follows trainer.max_epochs). The command line's values meet them before Hydra
    composes anything (preflight), the composed config after."""
    rules = {**TOP_RULES, **SWEEPER_RULES, **TRAINER_RULES}
    if command == "train":
        rules |= MODEL_RULES | CALLBACK_RULES
    if command == "analyze":
        rules |= ANALYZE_RULES
    return rules | DATA_RULES | EVAL_RULES


def validate_config(cfg: DictConfig, command: str = "train") -> None:
    """Raise ConfigError for the first invalid value of a config of `command` (train, eval or analyze).
    Imports no torch unless the config names extractor arguments or a GPU."""
    if command not in COMMANDS:
        raise ValueError(f"command={command!r}: one of {', '.join(COMMANDS)}")
    checks: list[Callable[[], None]] = [lambda: _check_rules(cfg, command_rules(command))]
    if command == "train":
        checks += [
            lambda: _check_model_keys(cfg),
            lambda: _check_model_consistency(cfg),
            lambda: _check_model_size(cfg),
            lambda: _check_noise_pairs(cfg),
            lambda: _check_extractor_kwargs(cfg),
            lambda: _check_extractor_data(cfg),
        ]
    checks += [
        lambda: _check_augment(cfg),
        lambda: _check_corruption(cfg, "data.train_corruption"),
        lambda: _check_corruption(cfg, "data.test_corruption"),
        lambda: _check_classes(cfg),
        lambda: _check_devices(cfg),
        lambda: _check_robustness(cfg),
        lambda: _check_attacks(cfg),
        lambda: _check_ood(cfg, command),
        lambda: _check_ckpt_path(cfg, required=command != "train"),
    ]
    for check in checks:
        check()
