"""Building a run's parts from its config (trainer, model, callbacks/, logger/), with a wrong argument
reported as one line that names the key and the arguments the class takes."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from dpn_lab.errors import ConfigError


def instantiate_checked(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """instantiate(node, **kwargs), after checking every key of `node` against its target's signature."""
    try:
        target = get_object(node._target_)
    except Exception as error:  # Hydra reports an unknown module path in several ways
        raise ConfigError(f"{key}._target_={node._target_!r} cannot be found: {error}") from None
    if inspect.isclass(target):
        parameters = inspect.signature(target.__init__).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            allowed = [name for name in parameters if name != "self"]
            for name in node:
                if not str(name).startswith("_") and name not in allowed:
                    raise ConfigError(
                        f"{key}.{name} is not an argument of {target.__name__}; it takes: {', '.join(allowed)}"
                    )
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        kind = "" if isinstance(cause, ConfigError) else f"{type(cause).__name__}: "  # ours names the key
        raise ConfigError(f"{key}: {kind}{cause}") from None


def instantiate_group(group: DictConfig | None, key: str) -> list[Any]:
    """Every `_target_` entry of a callbacks/ or logger/ config group (an empty group gives [])."""
    if not group:
        return []
    return [
        instantiate_checked(entry, f"{key}.{name}")
        for name, entry in group.items()
        if OmegaConf.is_dict(entry) and "_target_" in entry
    ]
