"""How the command-line entry points report a user's mistake: one line, non-zero exit, no traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from dpn_lab.errors import ConfigError, DataError, DivergenceError, NonFiniteRefinementError

# Mistakes a user can act on. Anything else is a bug and keeps its traceback.
USER_ERRORS = (
    ConfigError,
    DataError,
    DivergenceError,
    NonFiniteRefinementError,
    ValueError,
    FileNotFoundError,
)

T = TypeVar("T")
log = logging.getLogger("dpn_lab")


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _hydra_message(error: Exception) -> str:
    """Hydra's multi-line composition errors as one line (its key/type detail lines dropped)."""
    lines = [line.strip() for line in str(error).splitlines()]
    text = " ".join(
        line for line in lines if line and not line.startswith(("full_key", "object_type", "reference_type"))
    )
    text = text.partition(" Config search path")[0]
    head, found, options = text.partition("Available options in ")
    if found:
        group, _, names = options.partition(":")
        names = [n for n in names.split() if not n.startswith("_")]  # _base files are building blocks
        text = f"{head.strip()}; available options in {group}: {', '.join(names)}"
    return text


def check_overrides(config_name: str, args: list[str]) -> None:
    """Compose the config once with the command line's overrides (the first value of each sweep) so that an
    unknown key, group option or malformed override fails as one ConfigError line before Hydra starts."""
    from hydra import compose, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    flags = [a for a in args if a.startswith("-")]
    if any(f not in ("-m", "--multirun") for f in flags):
        return  # --cfg, --help, -cn ...: Hydra's own business
    overrides = [a for a in args if not a.startswith("-")]
    try:
        concrete = []
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                first = next(iter(override.sweep_string_iterator()))
                concrete.append(f"{override.get_key_element()}={first}")
            else:
                concrete.append(override.input_line)
        with initialize_config_module(config_module="dpn_lab.conf", version_base="1.3"):
            compose(config_name, overrides=concrete, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_hydra_message(error)) from None


def exit_on_user_error(run: Callable[[], T]) -> T:
    """Run; on a user error print one line to stderr and exit 1 (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    try:
        return run()
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
