"""Building a run's parts: a wrong argument or class is one ConfigError naming the key and what is allowed."""

import pytest
from omegaconf import OmegaConf

from dpn_lab.errors import ConfigError
from dpn_lab.runs.instantiate import instantiate_checked, instantiate_group


def test_an_unknown_trainer_argument_names_the_key_and_the_arguments_taken():
    node = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "max_epochs": 1, "bogus": 1})
    with pytest.raises(ConfigError) as caught:
        instantiate_checked(node, "trainer")
    message = str(caught.value)
    assert message.startswith("trainer.bogus is not an argument of Trainer; it takes: accelerator, strategy,")
    assert "max_epochs" in message and "\n" not in message


def test_a_constructor_error_is_one_line_naming_the_key():
    node = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 0})
    with pytest.raises(ConfigError) as caught:
        instantiate_checked(node, "trainer")
    assert str(caught.value).startswith("trainer: MisconfigurationException: ") and "\n" not in str(
        caught.value
    )


def test_an_unknown_class_is_one_line():
    node = OmegaConf.create({"_target_": "pytorch_lightning.callbacks.NoSuchCallback"})
    with pytest.raises(
        ConfigError,
        match=r"^callbacks.odd._target_='pytorch_lightning.callbacks.NoSuchCallback' cannot be found",
    ):
        instantiate_group(OmegaConf.create({"odd": node}), "callbacks")


def test_a_group_builds_every_entry_with_a_target():
    group = OmegaConf.create(
        {
            "early": {
                "_target_": "pytorch_lightning.callbacks.EarlyStopping",
                "monitor": "val/acc",
                "patience": 2,
            },
            "note": "not a callback",
        }
    )
    (built,) = instantiate_group(group, "callbacks")
    assert type(built).__name__ == "EarlyStopping" and built.patience == 2


def test_a_model_that_cannot_read_its_data_is_one_line_naming_the_fix():
    node = OmegaConf.create({"_target_": "dpn_lab.model.lit_module.DPNLitModule", "extractor": "cnn"})
    with pytest.raises(ConfigError) as caught:  # data=blobs gives flat inputs
        instantiate_checked(node, "model", input_shape=[2], n_classes=3)
    message = str(caught.value)
    assert message.startswith("model: CNNExtractor needs (channels, height, width) inputs")
    assert "use model.extractor=mlp" in message and "\n" not in message
