"""The errors a user can act on. Each message names the key or file and what is allowed.

They live apart from the code that raises them, so reporting a mistake never imports the model.
"""

import signal
from collections.abc import Iterable


class ConfigError(ValueError):
    """A config value, command-line argument or stored file that cannot work. A ValueError, so that code
    calling the package's classes directly catches a wrong argument the way Python's own are caught."""


def not_one_of(allowed: Iterable[object]) -> str:
    """The one wording of a value outside its choices, e.g. `model.covariance='dense' ` + this."""
    return "is not allowed; choose one of: " + ", ".join(dict.fromkeys(str(a) for a in allowed))


class DataError(RuntimeError):
    """Data that cannot be loaded: missing or corrupt files, impossible splits."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or refinement: the message names where and the likely cause."""


class NonFiniteRefinementError(FloatingPointError):
    """The refined state or potential stopped being finite during the ascent."""


class RunInterrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption) stopped the run. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int, saved: str | None = None) -> None:
        self.signum, self.saved = signum, saved
        name = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}.get(signum, f"signal {signum}")
        where = (
            f"{saved} is saved, resume with ckpt_path=last"
            if saved
            else "it came outside training, nothing to save"
        )
        super().__init__(f"stopped by {name}: {where}")
