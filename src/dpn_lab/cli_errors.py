"""How the command-line entry points report a user's mistake: one line, non-zero exit, no traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from dpn_lab.config_validation import ConfigError
from dpn_lab.data.base import DataError
from dpn_lab.lit_module import DivergenceError
from dpn_lab.potential import NonFiniteRefinementError

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


def exit_on_user_error(run: Callable[[], T]) -> T:
    """Run; on a user error print one line to stderr and exit 1 (HYDRA_FULL_ERROR=1 keeps the traceback)."""
    try:
        return run()
    except USER_ERRORS as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
