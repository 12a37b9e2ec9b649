"""The undocumented behaviour of Hydra and Lightning that dpn_lab relies on, each pinned here so that an
upgrade that changes it fails with a message naming what to fix. The list, with the reason for each, is the
docs/development.md, "Library internals we rely on"; keep the two together.
"""

import csv
from functools import partial

import pytest
import pytorch_lightning as L
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException

from dpn_lab.data.blobs import BlobsDataModule
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.runs.preflight import hydra_message, parse_flags


def test_hydras_private_argument_parser_has_the_flags_the_preflight_reads():
    from hydra._internal.utils import get_args_parser  # private: runs/preflight.parse_flags

    parser = get_args_parser()
    assert hasattr(parser, "_actions"), (
        "argparse no longer has _actions: fix preflight.parse_flags' flag list"
    )
    flags = parse_flags(["-m", "--config-name", "eval", "--config-dir", "/x", "a=1"])
    for name in ("help", "hydra_help", "cfg", "info", "shell_completion", "config_path", "overrides"):
        assert hasattr(flags, name), (
            f"Hydra's parser lost --{name.replace('_', '-')}: fix preflight.check_command_line"
        )
    assert flags.multirun and flags.config_name == "eval" and flags.config_dir == "/x"
    assert flags.overrides == ["a=1"]


def test_hydras_composition_errors_still_read_the_way_hydra_message_parses_them():
    GlobalHydra.instance().clear()
    with pytest.raises(HydraException) as caught:
        with initialize_config_module(config_module="dpn_lab.conf", version_base="1.3"):
            compose("train", overrides=["data=imagenet"])
    GlobalHydra.instance().clear()
    raw = str(caught.value)
    assert "Available options in 'data':" in raw and "Config search path" in raw, (
        f"Hydra's text changed; fix preflight.hydra_message: {raw!r}"
    )
    assert hydra_message(caught.value).startswith(
        "In 'train': Could not find 'data/imagenet'; available options in 'data': blobs, cifar10, cifar10_synthetic, digits"
    )


def test_hydra_still_prints_its_own_line_for_a_failed_job(capsys):
    """Why run_task hands a single run's failure to command_line instead of raising through Hydra."""
    failed = JobReturn(overrides=["a=1"], status=JobStatus.FAILED)
    failed.return_value = ValueError("x")
    with pytest.raises(ValueError):
        failed.return_value  # noqa: B018 (the property is the behaviour)
    assert "Error executing job with overrides: ['a=1']" in capsys.readouterr().err, (
        "Hydra no longer prints a line for a failed job: runs/task.failed_run may go"
    )


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow  # trains for a second
def test_lightning_writes_the_loggers_on_the_cadence_the_loss_window_assumes(tmp_path):
    """DPNLitModule logs train/loss once per log_every_n_steps window, when (global_step + 1) is a multiple
    of it, which is when Lightning's logger connector writes (its private should_update_logs)."""
    torch.manual_seed(0)
    data = BlobsDataModule(n_samples=400, batch_size=32)
    model = DPNLitModule([16], 4, extractor="mlp", n_steps=0, optimizer=partial(torch.optim.SGD, lr=0.05))
    losses = _Losses()
    trainer = L.Trainer(
        max_epochs=1,
        log_every_n_steps=3,
        logger=L.loggers.CSVLogger(tmp_path, name="", version=""),
        callbacks=[losses],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    with open(tmp_path / "metrics.csv") as f:
        logged = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    windows = [losses.losses[i : i + 3] for i in range(0, len(losses.losses) - len(losses.losses) % 3, 3)]
    assert len(losses.losses) == 9 and len(logged) == len(windows) == 3, (
        "Lightning's logging cadence changed: fix DPNLitModule.training_step's log_step"
    )
    assert logged == pytest.approx([sum(w) / 3 for w in windows], rel=1e-6)
