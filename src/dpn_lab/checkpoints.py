"""Checkpoint files: written atomically and never with non-finite weights; read as plain data only.

Reading never runs code: torch.load(weights_only=True) refuses pickled objects, any `_target_` (an import
path Hydra would call) is refused wherever it sits, and the model and data module are rebuilt by the
package's own constructors from plain values.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from dpn_lab.data.base import TensorDataModule
from dpn_lab.data.registry import (
    DATA_MODULES,
    IMPORT_KEY,
    build_data_module,
    constructor_defaults,
    import_path_in,
    parse_data_record,
)
from dpn_lab.errors import ConfigError
from dpn_lab.model.lit_module import DPNLitModule
from dpn_lab.model.options import PotentialConfig, TrainingConfig
from dpn_lab.model.retired_options import current_options

log = logging.getLogger(__name__)


def non_finite_parameters(state_dict: dict[str, Any]) -> list[str]:
    return [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()
    ]


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, with two guarantees.

    - Atomic: the file is written next to its destination and renamed over it only when complete, so a run
      killed while saving leaves the previous checkpoint intact (never a truncated one).
    - Finite: a checkpoint whose parameters are not all finite is not written at all (logged instead), so a
      diverging run cannot overwrite the last good checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        bad = non_finite_parameters(checkpoint.get("state_dict", {}))
        if bad:
            log.error(
                f"not writing {path}: non-finite parameters ({', '.join(bad[:3])}); the previous file is kept"
            )
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _data_record_key(checkpoint: dict[str, Any]) -> str | None:
    """Where Lightning stored the data module's state: under its class name (records, and older Hydra-style
    entries whose `_target_` names a dpn_lab data module)."""
    names = {cls.__qualname__ for cls in DATA_MODULES.values()}
    return next((key for key in checkpoint if key in names and isinstance(checkpoint[key], dict)), None)


def read_checkpoint(path: str, key: str = "ckpt_path") -> dict[str, Any]:
    """A checkpoint as plain data; a one-line ConfigError when the file is missing, truncated, not a
    checkpoint, holds objects other than plain data (torch.load weights_only=True), or holds an import path
    (`_target_`) anywhere but as the dpn_lab data module name of a checkpoint written before records."""
    checkpoint = _load(path, key)
    if not isinstance(checkpoint, dict):
        raise ConfigError(
            f"{key}={path}: not a dpn_lab training checkpoint (a {type(checkpoint).__name__}, not a mapping)"
        )
    data_key = _data_record_key(checkpoint)
    if data_key:  # an older checkpoint's data `_target_` is matched by name there, never imported
        parse_data_record(checkpoint[data_key], f"{key}={path}")
    found = import_path_in({k: v for k, v in checkpoint.items() if k != data_key})
    if found:
        raise ConfigError(
            f"{key}={path}: refused: {found[0]} holds an import path ({IMPORT_KEY}={found[1]!r}); "
            "dpn_lab checkpoints hold plain data only"
        )
    return checkpoint


def _with_historical_defaults(hp: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints store every extractor argument since the CNN gained `norm` and `pool`; a CNN checkpoint
    without them was written before, when the only CNN was BatchNorm + global average pooling."""
    kwargs = hp.get("extractor_kwargs") or {}
    if hp.get("extractor", "cnn") == "cnn" and "norm" not in kwargs:
        return {**hp, "extractor_kwargs": {"norm": "batch", "pool": "avg", **kwargs}}
    return hp


def model_from_checkpoint(checkpoint: dict[str, Any], path: str) -> DPNLitModule:
    """The DPNLitModule the checkpoint's hyperparameters describe, with its weights."""
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, dict):
        raise ConfigError(f"ckpt_path={path}: not a dpn_lab training checkpoint (no hyper_parameters)")
    hp = current_options(hp, f"ckpt_path={path}")
    accepted = {"input_shape", "n_classes"} | {
        f.name for c in (PotentialConfig, TrainingConfig) for f in fields(c)
    }
    unknown = sorted(set(hp) - accepted)
    if unknown:
        raise ConfigError(
            f"ckpt_path={path}: unknown hyperparameter {', '.join(unknown)}; a DPN takes: {', '.join(sorted(accepted))}"
        )
    hp = _with_historical_defaults(hp)
    with torch.device("meta"):  # shapes only: a hostile 10^5 x 10^5 potential is refused, never allocated
        check_checkpoint_fits(DPNLitModule(**hp), checkpoint, path)
    model = DPNLitModule(**hp)
    model.load_state_dict(checkpoint["state_dict"])
    return model


def data_module_from_checkpoint(
    checkpoint: dict[str, Any], path: str, data_cfg: DictConfig | None = None
) -> TensorDataModule:
    """The data module of the command line's `data=` when given, else the one the checkpoint was trained
    on, rebuilt from its stored name and arguments."""
    if data_cfg:
        return build_data_module(OmegaConf.to_container(data_cfg, resolve=True), "data")
    key = _data_record_key(checkpoint)
    if key is None:
        raise ConfigError(f"ckpt_path={path}: the checkpoint does not record its data; pass data=<name>")
    return build_data_module(checkpoint[key], f"ckpt_path={path}")


def _load(path: str, key: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{key}={path}: no such file") from None
    except pickle.UnpicklingError as error:
        reason = (
            str(error).splitlines()[0][:120]
            if "Weights only" not in str(error)
            else "it holds objects other than plain data"
        )
        raise ConfigError(f"{key}={path}: not a loadable dpn_lab checkpoint ({reason})") from None
    except Exception as error:  # torch's unpickler fails on empty or foreign files in many ways
        raise ConfigError(
            f"{key}={path}: not a readable checkpoint, truncated or corrupt "
            f"({(str(error).splitlines() or [type(error).__name__])[0][:120]})"
        ) from None


def check_checkpoint_fits(model: torch.nn.Module, checkpoint: dict[str, Any], path: str) -> None:
    """ConfigError naming the first differences when the checkpoint's weights do not fit `model`."""
    if "state_dict" not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not a dpn_lab training checkpoint (no state_dict)")
    theirs, ours = checkpoint["state_dict"], model.state_dict()
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    shapes = [
        f"{k} {tuple(theirs[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in theirs and tuple(theirs[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
                f"shape {', '.join(shapes[:3])}" if shapes else "",
            )
            if part
        )
        hp = checkpoint.get("hyper_parameters", {})
        saved = ", ".join(
            f"{k}={hp[k]}"
            for k in ("extractor", "feature_dim", "n_components", "covariance", "n_steps")
            if k in hp
        )
        raise ConfigError(
            f"ckpt_path={path} was trained with another model configuration ({saved}): {details}"
        )


# data arguments that say how the items are loaded, not which items are in which split
LOADING_ARGUMENTS = (
    "batch_size",
    "num_workers",
    "data_dir",
    "download",
    "augment",
    "augment_padding",
    "train_corruption",
    "test_corruption",
)
# the hyperparameters that fix the extractor's and the classifier's weights' meaning
STAGE_ONE_ARCHITECTURE = ("input_shape", "n_classes", "extractor", "extractor_kwargs", "feature_dim")


def stage_one_checkpoint(path: str) -> Path:
    """model.init_from as a file: the path itself, or for a run directory its best checkpoint."""
    given = Path(path)
    if not given.is_dir():
        return given
    best = sorted((given / "checkpoints").glob("epoch_*.ckpt"))
    if len(best) != 1:
        raise ConfigError(
            f"model.init_from={path}: a run directory must hold exactly one best checkpoint "
            f"(checkpoints/epoch_*.ckpt), found {len(best)}; name the file"
        )
    return best[0]


def copy_stage_one(path: str, destination: Path) -> None:
    """Write the parts of stage-1 checkpoint `path` that `start_from` reads (hyperparameters, weights, data
    record; no optimizer state or loop state, a third of the file) to `destination`."""
    checkpoint = read_checkpoint(str(stage_one_checkpoint(path)), "model.init_from")
    data_key = _data_record_key(checkpoint)
    kept = {k: checkpoint[k] for k in ("hyper_parameters", "state_dict", data_key) if k in checkpoint}
    torch.save(kept, destination)


def start_from(model: DPNLitModule, path: str, data_cfg: DictConfig) -> None:
    """Stage 2: load the extractor and classifier weights of a stage-1 checkpoint (read as data) into `model`.
    Refused, naming model.init_from, unless the checkpoint's extractor architecture and data split are this
    run's; the checkpoint file is only read."""
    file = stage_one_checkpoint(path)
    checkpoint = read_checkpoint(str(file), "model.init_from")
    hp = checkpoint.get("hyper_parameters")
    if not isinstance(hp, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"model.init_from={file}: not a dpn_lab training checkpoint")
    theirs = _with_historical_defaults(current_options(hp, f"model.init_from={file}"))
    ours = dict(model.hparams)
    different = [
        f"{k}={theirs.get(k)!r} (this run: {ours[k]!r})"
        for k in STAGE_ONE_ARCHITECTURE
        if _plain(theirs.get(k)) != _plain(ours[k])
    ]
    data_key = _data_record_key(checkpoint)
    if data_key is None:
        raise ConfigError(f"model.init_from={file}: the checkpoint does not record its data")
    their_class, their_args = parse_data_record(checkpoint[data_key], f"model.init_from={file}")
    our_class, our_args = parse_data_record(OmegaConf.to_container(data_cfg, resolve=True), "data")
    their_args = {**constructor_defaults(their_class), **their_args}
    our_args = {**constructor_defaults(our_class), **our_args}
    if their_class is not our_class:
        different.append(f"data={their_class.config_name} (this run: {our_class.config_name})")
    different += [
        f"data.{k}={their_args.get(k)!r} (this run: {our_args.get(k)!r})"
        for k in sorted(set(their_args) | set(our_args))
        if k not in LOADING_ARGUMENTS and _plain(their_args.get(k)) != _plain(our_args.get(k))
    ]
    if different:
        raise ConfigError(
            f"model.init_from={file} was trained with another extractor or data split: {'; '.join(different[:3])}"
        )
    state = {
        k: v
        for k, v in checkpoint["state_dict"].items()
        if k.startswith(("net.extractor.", "net.classifier."))
    }
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(v.shape)]
    if wrong or not state:
        raise ConfigError(
            f"model.init_from={file}: its weights do not fit this extractor ({', '.join(wrong[:3])})"
        )
    model.load_state_dict(state, strict=False)
    log.info(f"Stage 2: extractor and classifier from {file} ({len(state)} tensors)")


def _plain(value: Any) -> Any:
    """Containers as plain lists and dicts, so stored and configured values compare."""
    if isinstance(value, DictConfig) or OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
