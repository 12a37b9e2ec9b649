"""Renamed and removed model options: older checkpoints and run directories still load, an option that was
switched on is refused by name, and the old key on the command line is one line saying what to write."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import checkpoint_file
from dpn_lab.checkpoints import model_from_checkpoint, read_checkpoint
from dpn_lab.errors import ConfigError
from dpn_lab.model.retired_options import REMOVED, current_options
from dpn_lab.runs.preflight import concrete_overrides
from dpn_lab.runs.resume import config_fingerprint

# what a checkpoint written before 2026-12-04 holds for the options that changed
OLD_OPTIONS = {"precision": "diag", **{name: off for name, (off, _) in REMOVED.items()}}


def old_checkpoint(path, **options):
    """A checkpoint as an older version wrote it: `precision`, and every removed option at `options` or off."""
    path = checkpoint_file(path)
    checkpoint = torch.load(path, weights_only=True)
    hyper_parameters = checkpoint["hyper_parameters"]
    del hyper_parameters["covariance"]
    hyper_parameters.update({**OLD_OPTIONS, **options})
    torch.save(checkpoint, path)
    return path


def test_an_older_checkpoint_loads_with_the_same_weights(tmp_path):
    path = old_checkpoint(tmp_path / "old.ckpt")
    model = model_from_checkpoint(read_checkpoint(str(path)), str(path))
    assert model.hparams.covariance == "diag" and not set(REMOVED) & set(model.hparams)
    current = model_from_checkpoint(read_checkpoint(str(checkpoint_file(tmp_path / "new.ckpt"))), "new")
    for name, tensor in current.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(
    "option, value",
    [("step_size", "per_step"), ("langevin_temperature", 0.5), ("bound_step_size", True)],
)
def test_a_checkpoint_trained_with_a_removed_option_switched_on_is_refused_by_name(tmp_path, option, value):
    path = old_checkpoint(tmp_path / "old.ckpt", **{option: value})
    with pytest.raises(
        ConfigError, match=f"model.{option}={value!r} describes a model this version cannot build"
    ):
        model_from_checkpoint(read_checkpoint(str(path)), str(path))


def test_an_older_run_directory_is_the_same_experiment_for_resuming():
    new = OmegaConf.create({"seed": 0, "model": {"covariance": "full", "n_steps": 5}})
    old = OmegaConf.create(
        {"seed": 0, "model": {"precision": "full", "n_steps": 5, "bound_step_size": False}}
    )
    assert config_fingerprint(old, "old run") == config_fingerprint(new)
    switched_on = OmegaConf.create({"seed": 0, "model": {"precision": "full", "langevin_temperature": 0.1}})
    with pytest.raises(ConfigError, match="old run: model.langevin_temperature=0.1"):
        config_fingerprint(switched_on, "old run")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.precision=full", "model.precision=full: model.precision was renamed: write model.covariance"),
        ("+model.bound_step_size=true", "model.bound_step_size was removed: it targeted the same eta"),
        ("model.step_supervision=0.5", "model.step_supervision was removed: the loss of the intermediate"),
        ("trainer.precision=64-true", None),  # the trainer's precision is another key, still current
    ],
)
def test_an_old_key_on_the_command_line_says_what_to_write(override, message):
    if message is None:
        assert concrete_overrides([override], "train") == [override]
        return
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        concrete_overrides([override], "train")


def test_current_options_pass_through_unchanged():
    options = {"covariance": "lowrank", "rank": 3, "n_steps": 2}
    assert current_options(options, "here") == options
