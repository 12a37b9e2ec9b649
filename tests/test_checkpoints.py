"""Checkpoint files: atomic finite writes, and reads that refuse anything but plain data."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from conftest import DATA_ARGS, LEGACY_TARGET, checkpoint_file, payloads, placements, untouched
from dpn_lab.checkpoints import (
    SafeCheckpointIO,
    copy_stage_one,
    data_module_from_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    start_from,
)
from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.errors import ConfigError
from dpn_lab.model.lit_module import DPNLitModule


def test_every_hostile_placement_is_refused_when_read(place):
    directory, victim_hash = place
    for name, payload in payloads(directory).items():
        for where, extra in placements(payload).items():
            path = checkpoint_file(directory / "hostile.ckpt", extra)
            with pytest.raises(ConfigError, match=r"hostile.ckpt: refused: .*import path") as caught:
                checkpoint = read_checkpoint(str(path))
                data_module_from_checkpoint(checkpoint, str(path))
            assert "\n" not in str(caught.value), (name, where)
            untouched(directory, victim_hash)


def test_a_checkpoint_with_an_unknown_hyperparameter_is_one_line(tmp_path):
    path = checkpoint_file(tmp_path / "odd.ckpt", {"hyper_parameters_extra": {"shell": "rm -rf"}})
    with pytest.raises(ConfigError, match="odd.ckpt: unknown hyperparameter shell; a DPN takes: "):
        model_from_checkpoint(read_checkpoint(str(path)), str(path))


def test_a_checkpoint_asking_for_a_huge_potential_is_refused_before_anything_is_allocated(tmp_path):
    # the stored weights are the small default model's; the hyperparameters ask for 10^5 x 10^5 (40 GB)
    path = checkpoint_file(
        tmp_path / "huge.ckpt", {"hyper_parameters_extra": {"n_components": 100_000, "feature_dim": 100_000}}
    )
    with pytest.raises(ConfigError, match=r"huge.ckpt was trained with another model configuration .*shape"):
        model_from_checkpoint(read_checkpoint(str(path)), str(path))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable checkpoint, truncated or corrupt"),
        (b"epoch: 3\nweights: none\n", "not a readable checkpoint, truncated or corrupt"),
        ("list", "not a dpn_lab training checkpoint (a list, not a mapping)"),
    ],
)
def test_empty_text_and_list_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "odd.ckpt"
    if content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_checkpoint(str(path))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_checkpoints_written_before_records_still_rebuild_their_data(tmp_path):
    args = {**DATA_ARGS, "split_seed": 3, "batch_size": 32}
    path = checkpoint_file(tmp_path / "old.ckpt", data={"_target_": LEGACY_TARGET, **args})
    checkpoint = read_checkpoint(str(path))
    datamodule = data_module_from_checkpoint(checkpoint, str(path))
    assert type(datamodule) is DigitsDataModule and dict(datamodule.hparams) == args
    assert model_from_checkpoint(checkpoint, str(path)).hparams.covariance == "diag"
    # what a checkpoint stores now: name and plain arguments, no import path
    assert datamodule.state_dict() == {"name": "digits", "args": args}


def test_checkpoint_writes_are_atomic_and_never_non_finite(tmp_path):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    good = {"state_dict": {"w": torch.ones(3)}, "epoch": 1}
    io.save_checkpoint(good, path)
    # a write that fails half-way (an object torch.save cannot pickle) leaves the previous file intact
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "broken": lambda: None}, path)
    assert read_checkpoint(str(path))["epoch"] == 1 and list(tmp_path.iterdir()) == [path]
    # non-finite weights are refused, the good file stays
    io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}, "epoch": 2}, path)
    assert read_checkpoint(str(path))["epoch"] == 1


def test_unreadable_and_unsafe_checkpoints_are_one_line_errors(tmp_path):
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(ConfigError, match=r"truncated.ckpt: not a readable checkpoint, truncated or corrupt"):
        read_checkpoint(str(truncated))

    class Payload:  # a pickle that would run code when loaded without weights_only
        def __reduce__(self):
            return (os.system, ("echo owned",))

    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, unsafe)
    with pytest.raises(
        ConfigError,
        match="unsafe.ckpt: not a loadable dpn_lab checkpoint .it holds objects other than plain data",
    ):
        read_checkpoint(str(unsafe))


def test_a_cnn_checkpoint_from_before_norm_and_pool_rebuilds_its_batchnorm_average_pool_network(tmp_path):
    torch.manual_seed(0)
    old = DPNLitModule([1, 8, 8], 10, extractor_kwargs={"norm": "batch", "pool": "avg"})
    hyperparameters = {**dict(old.hparams), "extractor_kwargs": {}}  # what such checkpoints stored
    path = tmp_path / "old_cnn.ckpt"
    torch.save({"state_dict": old.state_dict(), "hyper_parameters": hyperparameters}, path)
    model = model_from_checkpoint(read_checkpoint(str(path)), str(path))
    images = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(model.eval()(images), old.eval()(images))


def stage_two_model(**options) -> DPNLitModule:
    torch.manual_seed(1)
    return DPNLitModule(input_shape=[1, 8, 8], n_classes=10, extractor="cnn", covariance="diag", **options)


def test_stage_two_starts_from_the_extractor_and_classifier_of_stage_one(tmp_path, make_cfg):
    stage_one = checkpoint_file(tmp_path / "stage_one.ckpt")
    before = stage_one.read_bytes()
    saved = torch.load(stage_one, weights_only=True)["state_dict"]
    model = stage_two_model()
    potential = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("net.potential.")}
    start_from(model, str(stage_one), make_cfg([]).data)
    for key, value in model.state_dict().items():
        if key.startswith(("net.extractor.", "net.classifier.")):
            assert torch.equal(value, saved[key]), key
        elif key.startswith("net.potential."):
            assert torch.equal(value, potential[key]), key  # the refinement is stage 2's own
    assert stage_one.read_bytes() == before
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "epoch_003.ckpt").write_bytes(before)
    start_from(stage_two_model(), str(tmp_path / "run"), make_cfg([]).data)  # a run directory: its best
    copy_stage_one(str(tmp_path / "run"), tmp_path / "kept.ckpt")  # what results/ keeps of a stage 1
    assert set(torch.load(tmp_path / "kept.ckpt", weights_only=True)) == {
        "hyper_parameters",
        "state_dict",
        "DigitsDataModule",
    }
    again = stage_two_model()
    start_from(again, str(tmp_path / "kept.ckpt"), make_cfg([]).data)
    assert all(
        torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items() if "potential" not in k
    )


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "model.init_from=.*missing.ckpt: no such file"),
        ("hostile", "model.init_from=.*: refused: .* holds an import path"),
        (
            "architecture",
            r"was trained with another extractor or data split: feature_dim=32 \(this run: 16\)",
        ),
        ("split", r"another extractor or data split: data.split_seed=0 \(this run: 3\)"),
        ("empty run", "a run directory must hold exactly one best checkpoint .checkpoints/epoch_.*found 0"),
    ],
)
def test_a_stage_one_checkpoint_that_does_not_fit_is_refused_by_name(
    tmp_path, place, make_cfg, case, message
):
    data_cfg = make_cfg(["data.split_seed=3"] if case == "split" else []).data
    model, path = (
        stage_two_model(feature_dim=16 if case == "architecture" else 32),
        tmp_path / "stage_one.ckpt",
    )
    if case == "hostile":
        checkpoint_file(path, placements(payloads(place[0])["os.system"])["hyperparameters"])
    elif case == "empty run":
        path = tmp_path / "run"
        (path / "checkpoints").mkdir(parents=True)
    elif case != "missing":
        checkpoint_file(path)
    with pytest.raises(ConfigError, match=message) as error:
        start_from(model, str(path if case != "missing" else tmp_path / "missing.ckpt"), data_cfg)
    assert "\n" not in str(error.value)
    untouched(*place)
