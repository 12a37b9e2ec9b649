"""One source of defaults: a value a YAML file under conf/ sets for one of dpn_lab's classes is the default of
that class's own argument, so a data module, callback or model built in a notebook behaves as the command
line does. (The model's options are defined once, in dpn_lab.model.options, and need no such check.) Hydra interpolations (`${...}`) are run-time wiring, not
defaults, and are left out."""

import pytest
from omegaconf import OmegaConf

from dpn_lab.callbacks.figure_logger import FigureLogger
from dpn_lab.callbacks.kmeans_init import KMeansInit
from dpn_lab.config import CONF_DIR
from dpn_lab.data.base import TensorDataModule
from dpn_lab.data.registry import DATA_MODULES, accepted_arguments, constructor_defaults
from dpn_lab.runs.preflight import group_options


def literal_values(node) -> dict:
    """The keys of a YAML node whose value is written out, not an interpolation or a nested group."""
    return {
        key: OmegaConf.to_container(node)[key]
        for key in node
        if not OmegaConf.is_interpolation(node, key) and not str(key).startswith("_")
    }


@pytest.mark.parametrize("option", group_options("data"))
def test_each_data_option_is_its_classes_defaults(make_cfg, option):
    data = make_cfg([f"data={option}"]).data
    cls = DATA_MODULES[data.name]
    assert data.name == option == cls.config_name
    assert set(data) - {"name"} == accepted_arguments(cls), "a YAML key without an argument, or the reverse"
    defaults = constructor_defaults(cls)
    drifted = {
        k: (v, defaults[k]) for k, v in literal_values(data).items() if k != "name" and v != defaults[k]
    }
    assert not drifted, f"data={option}: YAML value != class default: {drifted}"


def test_the_shared_data_keys_are_the_base_class_defaults():
    base = OmegaConf.load(CONF_DIR / "data" / "_base.yaml")
    defaults = constructor_defaults(TensorDataModule)
    assert set(base) == set(defaults)
    assert {k: v for k, v in literal_values(base).items() if v != defaults[k]} == {}


@pytest.mark.parametrize("name, cls", [("figures", FigureLogger), ("kmeans_init", KMeansInit)])
def test_the_callbacks_yaml_holds_the_callbacks_defaults(name, cls):
    entry = OmegaConf.load(CONF_DIR / "callbacks" / "default.yaml")[name]
    assert entry._target_ == f"{cls.__module__}.{cls.__qualname__}"
    defaults = constructor_defaults(cls)
    assert set(literal_values(entry)) <= set(defaults)
    assert {k: v for k, v in literal_values(entry).items() if v != defaults[k]} == {}


def test_a_data_module_built_without_arguments_is_the_command_lines(make_cfg):
    """The notebook path: DigitsDataModule() stores exactly what `data=digits` builds."""
    from dpn_lab.data.digits import DigitsDataModule
    from dpn_lab.data.registry import build_data_module

    cfg = make_cfg(["data=digits"])
    built = build_data_module(OmegaConf.to_container(cfg.data, resolve=True), "data")
    plain = DigitsDataModule(data_dir=cfg.paths.data_dir)
    assert built.state_dict() == plain.state_dict()
