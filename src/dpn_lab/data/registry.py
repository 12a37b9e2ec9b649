"""The data modules dpn_lab builds, by name, and how a stored description of one becomes a data module.

A checkpoint or a sweep's robustness.json describes its data module as plain data, {"name": <data group
option>, "args": {<constructor argument>: <plain value>}}; a composed `data` config (conf/data/) is the
same flat, {"name": <option>, <argument>: <value>, ...}. Older files hold Hydra's form, {"_target_":
"dpn_lab.data....<Class>", <argument>: <value>}. Whichever form, nothing is imported by path: the name (or
the class name at the end of the path) is looked up in DATA_MODULES, every argument must be one the class
takes, and no value may hold a `_target_` anywhere.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from dpn_lab.data.base import TensorDataModule
from dpn_lab.data.blobs import BlobsDataModule
from dpn_lab.data.digits import DigitsDataModule
from dpn_lab.data.mnist5k import MNIST5kDataModule
from dpn_lab.data.synthetic import SyntheticCIFAR10DataModule
from dpn_lab.data.torchvision_sets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from dpn_lab.errors import ConfigError, not_one_of

DATA_MODULES: dict[str, type[TensorDataModule]] = {
    cls.config_name: cls
    for cls in (
        DigitsDataModule,
        MNIST5kDataModule,
        MNISTDataModule,
        FashionMNISTDataModule,
        CIFAR10DataModule,
        SyntheticCIFAR10DataModule,
        BlobsDataModule,
    )
}
IMPORT_KEY = "_target_"  # what Hydra's instantiate imports and calls
_PLAIN = (type(None), bool, int, float, str)
# dpn_lab.data.<Class> (configs of older runs) and dpn_lab.data.<module>.<Class> (older checkpoints)
_OUR_TARGET = re.compile(r"dpn_lab\.data\.(?:[A-Za-z_]\w*\.)?([A-Za-z_]\w*)")


def import_path_in(value: Any, where: str = "") -> tuple[str, str] | None:
    """(where, path) of the first `_target_` key in nested dicts and lists, or None."""
    if isinstance(value, Mapping):
        if IMPORT_KEY in value:
            return where or IMPORT_KEY, str(value[IMPORT_KEY])
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = import_path_in(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _not_plain(value: Any, where: str) -> str | None:
    """`where` of the first value that is not a number, string, bool, None, or a list/dict of them."""
    if isinstance(value, _PLAIN):
        return None
    if isinstance(value, list | tuple):
        items = enumerate(value)
    elif isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items = value.items()
    else:
        return where
    return next((bad for key, item in items if (bad := _not_plain(item, f"{where}.{key}"))), None)


def accepted_arguments(cls: type[TensorDataModule]) -> set[str]:
    """The constructor arguments of a data module (its own and the shared ones of TensorDataModule)."""
    names = set()
    for klass in (cls, TensorDataModule):
        names |= {
            p.name
            for p in inspect.signature(klass.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        }
    return names


def constructor_defaults(cls: type) -> dict[str, Any]:
    """Every keyword default of cls's and its bases' constructors, the most derived one winning."""
    defaults: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" in vars(klass):
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.default is not p.empty:
                    defaults[p.name] = p.default
    return defaults


def parse_data_record(record: Any, source: str) -> tuple[type[TensorDataModule], dict[str, Any]]:
    """(class, arguments) that a stored record describes; ConfigError naming `source` for anything else."""
    known = ", ".join(DATA_MODULES)
    if isinstance(record, Mapping) and set(record) == {"name", "args"}:
        name, args = record["name"], record["args"]
    elif isinstance(record, Mapping) and IMPORT_KEY in record:
        target = str(record[IMPORT_KEY])
        match = _OUR_TARGET.fullmatch(target)
        by_class = {cls.__qualname__: n for n, cls in DATA_MODULES.items()}
        if not match or match.group(1) not in by_class:
            raise ConfigError(
                f"{source}: refused: the data names the import path {target!r}; only dpn_lab's data modules "
                f"are built: {known}"
            )
        name, args = by_class[match.group(1)], {k: v for k, v in record.items() if k != IMPORT_KEY}
    elif isinstance(record, Mapping) and "name" in record:
        name, args = record["name"], {k: v for k, v in record.items() if k != "name"}
    else:
        raise ConfigError(f"{source}: the data description is not {{name: ..., args: {{...}}}}")
    if name not in DATA_MODULES:
        raise ConfigError(f"{source}: data {name!r} {not_one_of(DATA_MODULES)}")
    if not isinstance(args, Mapping):
        raise ConfigError(f"{source}: the data arguments must be a mapping, not {type(args).__name__}")
    nested = import_path_in(args)
    if nested:
        raise ConfigError(
            f"{source}: refused: data argument {nested[0]} holds an import path ({IMPORT_KEY}={nested[1]!r}); "
            "stored data may hold plain values only"
        )
    cls = DATA_MODULES[name]
    unknown = sorted(set(args) - accepted_arguments(cls))
    if unknown:
        raise ConfigError(
            f"{source}: data {name} takes no argument {', '.join(unknown)}; it takes: "
            + ", ".join(sorted(accepted_arguments(cls)))
        )
    bad = _not_plain(dict(args), "data")
    if bad:
        raise ConfigError(f"{source}: {bad} is not plain data (numbers, strings, lists, mappings)")
    return cls, dict(args)


def build_data_module(record: Any, source: str) -> TensorDataModule:
    """The data module a record (or a composed `data` config) describes, built by a plain constructor call."""
    cls, args = parse_data_record(record, source)
    return cls(**args)
