"""The two kinds of rule a config value obeys, a set of choices or a number in a range: each checks a value
and says in one phrase what is allowed. Torch-free (the command-line check uses them before torch loads)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dpn_lab.errors import ConfigError, not_one_of


class Rule:
    """What both kinds share: `check` says what is wrong with a value (None: nothing), `require` raises it as
    the one error a user sees, `key=value <what is allowed>`, wherever the value is checked."""

    def check(self, value: Any) -> str | None:
        raise NotImplementedError

    def require(self, key: str, value: Any) -> None:
        problem = self.check(value)
        if problem:
            raise ConfigError(f"{key}={value!r} {problem}")


@dataclass(frozen=True)
class Choice(Rule):
    allowed: tuple[Any, ...]

    def check(self, value: Any) -> str | None:
        # type-strict: 0 == False and 1 == True in Python, but 0 is no answer to a true/false key
        if not any(type(value) is type(a) and value == a for a in self.allowed):
            return not_one_of(self.allowed)
        return None


@dataclass(frozen=True)
class Number(Rule):
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value instead of low <= value
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        kind = "an integer" if self.integer else "a number"
        return f"{kind} {' and '.join(parts)}".strip() + (" or null" if self.nullable else "")

    def check(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        wrong_type = isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float))
        if wrong_type:
            return f"has the wrong type: must be {self.describe()}"
        if not math.isfinite(value):
            return f"is not finite: must be {self.describe()}"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"is out of range: must be {self.describe()}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"is out of range: must be {self.describe()}"
        return None
