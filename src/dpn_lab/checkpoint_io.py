"""Checkpoint files: written atomically and never with non-finite weights; read as plain data only."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dpn_lab.config_validation import ConfigError

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


def read_checkpoint(path: str) -> dict[str, Any]:
    """A checkpoint as plain data (torch.load weights_only=True, so it cannot run code); a one-line
    ConfigError when the file is missing, truncated, not a checkpoint, or asks to run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"ckpt_path={path}: no such file") from None
    except pickle.UnpicklingError as error:
        reason = (
            str(error).splitlines()[0][:120]
            if "Weights only" not in str(error)
            else "it holds objects other than plain data"
        )
        raise ConfigError(f"ckpt_path={path}: not a loadable dpn_lab checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConfigError(
            f"ckpt_path={path}: not a readable checkpoint, truncated or corrupt ({str(error).splitlines()[0][:120]})"
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
            for k in ("extractor", "feature_dim", "n_components", "precision", "n_steps")
            if k in hp
        )
        raise ConfigError(
            f"ckpt_path={path} was trained with another model configuration ({saved}): {details}"
        )
