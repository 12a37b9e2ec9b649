"""The data registry: only dpn_lab's data modules, with their own arguments, from plain values."""

from __future__ import annotations

import pytest

from dpn_lab.data.registry import build_data_module
from dpn_lab.errors import ConfigError


def test_a_foreign_data_name_or_argument_is_refused():
    with pytest.raises(ConfigError, match="data 'imagenet' is not allowed; choose one of: digits, mnist5k"):
        build_data_module({"name": "imagenet", "args": {}}, "x")
    with pytest.raises(
        ConfigError,
        match="x: data digits takes no argument shell; it takes: augment, augment_padding, batch_size",
    ):
        build_data_module({"name": "digits", "args": {"shell": "rm"}}, "x")
    with pytest.raises(ConfigError, match=r"x: data.batch_size is not plain data"):
        build_data_module({"name": "digits", "args": {"batch_size": object()}}, "x")
    with pytest.raises(
        ConfigError, match="refused: the data names the import path 'dpn_lab.model.lit_module.DPNLitModule'"
    ):
        build_data_module({"_target_": "dpn_lab.model.lit_module.DPNLitModule"}, "x")
