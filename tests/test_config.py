"""The config tree: every experiment composes and instantiates; every validated key fails with its message."""

import inspect
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dpn_lab.config import MODEL_RULES, ConfigError, validate_config
from dpn_lab.data.registry import build_data_module
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.model.options import PotentialConfig, TrainingConfig
from dpn_lab.model.potential import DenoisingPotential
from dpn_lab.runs.instantiate import instantiate_group

CONF = Path(__file__).resolve().parents[1] / "src" / "dpn_lab" / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_top_level_conf_is_the_package_conf():
    top = Path(__file__).resolve().parents[1] / "conf"
    assert top.resolve() == CONF.resolve()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(make_cfg, experiment):
    cfg = make_cfg([f"experiment={experiment}"])
    validate_config(cfg)
    datamodule = build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
    model = instantiate(
        cfg.model, input_shape=list(datamodule.input_shape), n_classes=datamodule.n_classes, _convert_="all"
    )
    assert model.net.potential.n_components == cfg.model.n_components
    callbacks = instantiate_group(cfg.callbacks, "callbacks")
    trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=instantiate_group(cfg.logger, "logger") or False
    )
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["data", "trainer", "logger", "debug", "callbacks"])
def test_every_option_of_a_group_composes(make_cfg, group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_")):
        cfg = make_cfg([f"{group}={option}"])
        if cfg.get("trainer", {}).get("accelerator") == "gpu" and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="no CUDA device is visible"):
                validate_config(cfg)
        elif group == "data" and option == "blobs":  # flat vectors: the default CNN cannot read them
            with pytest.raises(ConfigError, match="model.extractor=cnn is not possible with data=blobs"):
                validate_config(cfg)
            validate_config(make_cfg(["data=blobs", "model.extractor=mlp", "model.n_components=4"]))
        else:
            validate_config(cfg)


def test_optuna_search_composes(make_cfg):
    cfg = make_cfg(["hparams_search=optuna"])
    assert cfg.hydra.sweeper.direction == "maximize" and "model.n_components" in cfg.hydra.sweeper.params


STAGE_TWO = "recipe=frozen_denoiser model.init_from=/stage/one.ckpt"
BAD_VALUES = [
    ("model.freeze_extractor=true", "model.freeze_extractor=true needs init_from=<a stage-1 checkpoint>"),
    (
        "model.potential_objective=density",
        "model.potential_objective=density needs freeze_extractor=true (and init_from)",
    ),
    (
        "model.potential_objective=ml",
        "model.potential_objective='ml' is not allowed; choose one of: classification",
    ),
    (
        f"{STAGE_TWO} variant=tweedie model.noise_pairs=null",
        "model.potential_objective=tweedie needs noise_pairs (clean and corrupted features of each image)",
    ),
    (
        f"{STAGE_TWO} variant=tweedie model.n_steps=3",
        "model.n_steps=3 is not allowed with step=noise_model: use 1 (one step of Tweedie's formula is the "
        "posterior mean",
    ),
    (
        f"{STAGE_TWO} variant=tweedie model.step=scalar",
        "model.step=scalar is not allowed with potential_objective=tweedie",
    ),
    (
        f"{STAGE_TWO} variant=tweedie +model.noise_pairs.steps=2 model.noise_pairs.kind=pgd_linf",
        "model.potential_objective=tweedie needs noise_pairs to be a corruption",
    ),
    (
        f"{STAGE_TWO} variant=denoise model.consistency_weight=0",
        "model.potential_objective=denoise needs consistency_weight > 0",
    ),
    (
        f"{STAGE_TWO} variant=density model.n_steps=0",
        "model.potential_objective=density is not allowed with n_steps=0",
    ),
    ("model.init_from=''", "model.init_from='' is not allowed: use a checkpoint path or null"),
    (
        "model.covariance=dense",
        "model.covariance='dense' is not allowed; choose one of: full, diag, spherical, lowrank",
    ),
    ("model.extractor=resnet", "model.extractor='resnet' is not allowed; choose one of: mlp, cnn"),
    (
        "model.grad_mode=truncated",
        "model.grad_mode='truncated' is not allowed; choose one of: unrolled, detach",
    ),
    (
        "model.gradient_impl=fd",
        "model.gradient_impl='fd' is not allowed; choose one of: closed_form, autograd",
    ),
    (
        "+model.extractor_kwargs.norm=layer",
        "model.extractor_kwargs.norm='layer' is not allowed; choose one of: batch, group",
    ),
    (
        "model.extractor=mlp +model.extractor_kwargs.pool=avg",
        "model.extractor_kwargs.pool is not allowed for model.extractor=mlp; it takes: hidden",
    ),
    (
        "+model.extractor_kwargs.channels=[]",
        "model.extractor_kwargs.channels=[] is not allowed: use a non-empty list",
    ),
    ("model.consistency_weight=-1", "model.consistency_weight=-1 is out of range: must be a number >= 0"),
    ("model.center_update=kalman", "model.center_update='kalman' is not allowed; choose one of: none, ema"),
    ("model.center_momentum=1", "model.center_momentum=1 is out of range: must be a number >= 0 and < 1"),
    ("model.init_step_limit=0", "model.init_step_limit=0 is out of range: must be a number > 0 or null"),
    (
        "+model.noise_pairs.kind=gaussian",
        "model.noise_pairs={'kind': 'gaussian'} is not allowed: use null or",
    ),
    (
        "model.noise_pairs={kind:fog,severity:0.1}",
        "model.noise_pairs.kind='fog' is not allowed; choose one of: gaussian, salt_pepper, occlusion, blur",
    ),
    (
        "model.noise_pairs={kind:salt_pepper,severity:2}",
        "model.noise_pairs.severity=2 is out of range: must be a number >= 0 and <= 1",
    ),
    ("eval.split=train", "eval.split='train' is not allowed; choose one of: test, val"),
    ("eval.figures=maybe", "eval.figures='maybe' is not allowed; choose one of: True, False"),
    (
        "eval.test_steps=[0,-1]",
        "eval.test_steps=[0, -1] is not allowed: use null or a non-empty list of integers >= 0",
    ),
    (
        "robustness@eval=default eval.levels.blur=[1000]",
        "eval.levels.blur.0=1000 is out of range: must be a number >= 0 and <= 10",
    ),
    ("model.init=random", "model.init='random' is not allowed; choose one of: kmeans, gmm"),
    ("model.n_components=0", "model.n_components=0 is out of range: must be an integer >= 1"),
    ("model.n_components=abc", "model.n_components='abc' has the wrong type: must be an integer >= 1"),
    ("model.n_steps=-1", "model.n_steps=-1 is out of range: must be an integer >= 0"),
    ("model.feature_dim=2.5", "model.feature_dim=2.5 has the wrong type: must be an integer >= 1"),
    ("model.init_step_size=0", "model.init_step_size=0 is out of range: must be a number > 0"),
    ("model.init_precision=-1", "model.init_precision=-1 is out of range: must be a number > 0"),
    ("model.init_samples=0", "model.init_samples=0 is out of range: must be an integer >= 1"),
    (
        "model.refinement_weight_decay=-0.1",
        "model.refinement_weight_decay=-0.1 is out of range: must be a number >= 0 or null",
    ),
    (
        "model.checkpoint_steps=maybe",
        "model.checkpoint_steps='maybe' is not allowed; choose one of: True, False",
    ),
    (
        "model.n_components=5000",
        "model.n_components=5000 is out of range: must be <= model.init_samples=2000",
    ),
    (
        "model.covariance=lowrank model.rank=99",
        "model.rank=99 is out of range: must be <= feature_dim=32 for covariance=lowrank",
    ),
    ("data.batch_size=0", "data.batch_size=0 is out of range: must be an integer >= 1"),
    ("data.val_fraction=1.0", "data.val_fraction=1.0 is out of range: must be a number > 0 and < 1"),
    ("data.test_fraction=0", "data.test_fraction=0 is out of range: must be a number > 0 and < 1"),
    ("data.split_seed=-3", "data.split_seed=-3 is out of range: must be an integer >= 0"),
    ("data.num_workers=-1", "data.num_workers=-1 is out of range: must be an integer >= 0"),
    ("data.download=yes", "data.download='yes' is not allowed; choose one of: True, False"),
    (
        "data.train_corruption={kind:rain,severity:1}",
        "data.train_corruption.kind='rain' is not allowed; choose one of: gaussian, salt_pepper, occlusion, blur",
    ),
    (
        "data.test_corruption={kind:salt_pepper,severity:1.5}",
        "data.test_corruption.severity=1.5 is out of range: must be a number >= 0 and <= 1",
    ),
    (
        "data.test_corruption=0.1",
        "data.test_corruption=0.1 is not allowed: use null or {kind: ..., severity: ...}",
    ),
    (
        "trainer.accelerator=fpga",
        "trainer.accelerator='fpga' is not allowed; choose one of: auto, cpu, gpu, cuda",
    ),
    ("trainer.precision=8-bit", "trainer.precision='8-bit' is not allowed; choose one of: 32-true"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is out of range: must be an integer >= 1"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0 is out of range: must be an integer >= 1"),
    ("trainer.devices=0", "trainer.devices=0 is not allowed: use a count >= 1, a list of GPU ids, or auto"),
    (
        "trainer.accelerator=gpu",
        "trainer.accelerator=gpu but no CUDA device is visible: use trainer.accelerator=auto or cpu",
    ),
    ("seed=-1", "seed=-1 is out of range: must be an integer >= 0 or null"),
    (
        "ckpt_path=/no/such.ckpt",
        "ckpt_path='/no/such.ckpt' is not allowed: must be an existing checkpoint file, last, or null",
    ),
]


@pytest.mark.parametrize("overrides, message", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_named_with_what_is_allowed(make_cfg, overrides, message):
    cfg = make_cfg(overrides.split())
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("config", [PotentialConfig, TrainingConfig])
def test_the_model_options_are_defined_once_in_their_dataclass(make_cfg, config):
    """The `model.*` keys, their defaults and their rules are the option dataclasses' fields: no YAML file,
    rule table or constructor signature writes them again."""
    model = make_cfg([]).model
    for f in fields(config):
        default = f.default_factory() if f.default is MISSING else f.default
        assert model[f.name] == default, f.name
        assert MODEL_RULES.get(f"model.{f.name}") is f.metadata["rule"], f.name
    assert not {f.name for f in fields(config)} & set(OmegaConf.load(CONF / "model" / "dpn.yaml"))
    assert list(inspect.signature(DenoisingPotential.__init__).parameters) == ["self", "config"]
    lit_arguments = list(inspect.signature(DPNLitModule.__init__).parameters)
    assert lit_arguments == ["self", "input_shape", "n_classes", "optimizer", "scheduler", "options"]


def test_a_model_option_of_neither_dataclass_is_refused_by_the_module():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_component'"):
        DPNLitModule([1, 8, 8], 10, n_component=3)
