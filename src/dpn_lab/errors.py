"""The errors a user can act on. Each message names the key or file and what is allowed.

They live apart from the code that raises them, so reporting a mistake never imports the model.
"""


class ConfigError(ValueError):
    """A config value, command-line argument or stored file that cannot work."""


class DataError(RuntimeError):
    """Data that cannot be loaded: missing or corrupt files, impossible splits."""


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or refinement: the message names where and the likely cause."""


class NonFiniteRefinementError(FloatingPointError):
    """The refined state or potential stopped being finite during the ascent."""
