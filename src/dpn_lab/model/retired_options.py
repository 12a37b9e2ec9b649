"""Model options that were renamed or removed: what an older checkpoint, run directory or command line
holding one of them means today. Torch-free: the command-line check reads it before torch loads.

A checkpoint or run directory still loads: a renamed option is read under its new name, and a removed one is
dropped when it holds the value that switched it off (every checkpoint trained without it). A removed option
that was switched on describes a model this version cannot build: refused, naming the option. On the command
line, either kind is one line saying what to write instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpn_lab.errors import ConfigError

# old name -> new name
RENAMED = {"precision": "covariance"}

# option -> (the value that switched it off, why it went): removed on 2026-12-04, used by no experiment,
# committed result or test of behaviour
REMOVED: dict[str, tuple[Any, str]] = {
    "langevin_temperature": (0.0, "Langevin noise in the ascent was never used in an experiment"),
    "bound_step_size": (
        False,
        "it targeted the same eta * lambda_max < 2 as model.init_step_limit, which caps eta when fitting starts",
    ),
    "step_size": ("shared", "a separate eta per step (per_step) was never used; eta is one learnable scalar"),
    "step_supervision": (0.0, "the loss of the intermediate steps was never used in an experiment"),
    "aux_loss_weight": (0.0, "the loss of the unrefined features was never used in an experiment"),
}


def command_line_message(key: str) -> str | None:
    """Why `model.<option>` on the command line is no longer accepted, or None for a current key."""
    group, _, option = key.lstrip("+~").partition(".")
    if group != "model":
        return None
    if option in RENAMED:
        return f"model.{option} was renamed: write model.{RENAMED[option]}"
    if option in REMOVED:
        return f"model.{option} was removed: {REMOVED[option][1]}"
    return None


def current_options(options: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Model options as this version names them: renamed ones moved, removed ones dropped when switched off;
    ConfigError naming `source` for a removed option that was switched on."""
    current = {RENAMED.get(name, name): value for name, value in options.items()}
    for name, (off, why) in REMOVED.items():
        if name in current:
            value = current.pop(name)
            if value != off:
                raise ConfigError(
                    f"{source}: model.{name}={value!r} describes a model this version cannot build "
                    f"(model.{name} was removed: {why})"
                )
    return current
