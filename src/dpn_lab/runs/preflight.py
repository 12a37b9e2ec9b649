"""The check every command runs before torch and Lightning load (they take seconds): the command line is
parsed, the config composed and validated, and the places the run will write are tried. A mistake is one
`error:` line in about a second; `--help` prints the command's own help.

Nothing here imports torch: `python -m dpn_lab.train` calls `preflight` above its heavy imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dpn_lab.config import CONF_DIR, command_rules, validate_config
from dpn_lab.errors import ConfigError
from dpn_lab.model.retired_options import command_line_message
from dpn_lab.runs.lock import check_run_directory_free, is_ddp_child
from dpn_lab.runs.resolvers import register_resolvers

# the keys a `~key` override may delete: entries of the list-like groups, and the arguments of a swapped
# optimizer or scheduler class (e.g. ~model.scheduler.T_max with ExponentialLR); never a value the run needs
DELETABLE = ("callbacks.", "logger.", "model.optimizer.", "model.scheduler.")
NAME_MAX, PATH_MAX = 255, 4096
# environment variables by which Lightning recognises a cluster that starts every node's processes
CLUSTER_VARIABLES = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE", "NODE_RANK")
_checked: set[tuple[str, ...]] = set()


def wants_traceback() -> bool:
    """HYDRA_FULL_ERROR=1, as the user set it when the command started (command_line then sets it for
    Hydra's sake and records the user's choice in DPN_LAB_TRACEBACK, which DDP ranks inherit)."""
    return os.environ.get("DPN_LAB_TRACEBACK", os.environ.get("HYDRA_FULL_ERROR", "0")) == "1"


def preflight(command: str, help_text: str, argv: list[str] | None = None) -> None:
    """Check `argv` (default: sys.argv[1:]) for `command`; exit 1 with one line on a mistake, or print
    `help_text` and the config groups and exit 0 on --help. Checking the same arguments twice is free."""
    argv = sys.argv[1:] if argv is None else list(argv)
    key = (command, *argv)
    if key in _checked:
        return
    try:
        check_command_line(command, help_text, argv)
    except Exception as error:  # whatever the check raises, the user gets one line (a bug says so)
        if wants_traceback():
            raise
        if isinstance(error, ConfigError):
            line = f"ConfigError: {error}"
        else:
            line = (
                f"{type(error).__name__}: {error} (an unexpected error while checking the command line; "
                "HYDRA_FULL_ERROR=1 shows its traceback)"
            )
        print(f"error: {' '.join(line.split())}", file=sys.stderr)
        sys.exit(1)
    _checked.add(key)


def check_command_line(command: str, help_text: str, argv: list[str]) -> None:
    """Raise ConfigError for the first mistake of the command line `argv`."""
    flags = parse_flags(argv)
    if flags.help:
        print_help(command, help_text)
    if flags.hydra_help or flags.cfg or flags.info or flags.shell_completion:
        return  # Hydra's own business: it prints and exits
    config_name = flags.config_name or command
    extra_dirs = check_config_sources(flags, config_name)
    overrides = concrete_overrides(flags.overrides, command)
    cfg = compose_config(config_name, overrides, extra_dirs)
    multirun = flags.multirun or str(OmegaConf.select(cfg, "hydra.mode")) == "RunMode.MULTIRUN"
    if not multirun:
        swept = [o for o in flags.overrides if is_sweep(o)]
        if swept:
            raise ConfigError(
                f"{swept[0]} is a sweep (several values): add -m (--multirun) to run one job per value"
            )
    try:  # interpolations resolve when read: a missing key or environment variable surfaces here
        validate_config(cfg, command)
    except OmegaConfBaseException as error:
        raise ConfigError(omegaconf_message(error)) from None
    check_outputs(cfg, multirun)
    check_environment(cfg, multirun)


def parse_flags(argv: list[str]) -> argparse.Namespace:
    """Hydra's own flags (its parser), with a wrong or unknown flag raised instead of printed with usage."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def refuse(message: str) -> NoReturn:
        known = sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))
        raise ConfigError(f"{message}; the flags are: {', '.join(known)} (and -m for --multirun)")

    parser.error = refuse  # type: ignore[method-assign]
    flags, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse(f"unrecognized argument: {unknown[0]}")
    return flags


def print_help(command: str, help_text: str) -> NoReturn:
    groups = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = group_options(group.name)
        if options:
            groups.append(f"  {group.name + '=':<15} {', '.join(options)}")
    print(
        f"{help_text.strip()}\n\nConfig groups (choose with group=option):\n"
        + "\n".join(groups)
        + f"\n\nEvery key and its value: python -m dpn_lab.{command} --cfg job   "
        "Hydra's own flags: --hydra-help"
    )
    sys.exit(0)


def check_config_sources(flags: argparse.Namespace, config_name: str) -> list[str]:
    """The extra config directories (--config-dir), after checking them and that config_name exists."""
    extra = []
    for flag, value in (("--config-dir", flags.config_dir), ("--config-path", flags.config_path)):
        if value and not value.startswith("pkg://"):
            if not Path(value).is_dir():
                raise ConfigError(f"{flag}={value} is not a directory")
            extra.append(str(Path(value).resolve()))
    found = any((Path(d) / f"{config_name}.yaml").is_file() for d in [str(CONF_DIR), *extra])
    if not found:
        names = sorted(f.stem for f in CONF_DIR.glob("*.yaml"))
        raise ConfigError(
            f"--config-name={config_name} is not a config; the commands' configs are: {', '.join(names)}"
        )
    return extra


def is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def concrete_overrides(overrides: list[str], command: str) -> list[str]:
    """The overrides with each sweep replaced by its first value, after refusing deletions of needed keys,
    the `_`-prefixed building blocks of a group (e.g. data=_base) and a value (every value of a sweep) that
    its key's rule refuses: a wrong value is refused before Hydra composes the config (0.3-0.4 s a command)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        raise ConfigError(hydra_message(error)) from None
    concrete, rules = [], command_rules(command)
    for override in parsed:
        key = override.get_key_element()
        if not key.lstrip("+~"):
            raise ConfigError(f"{override.input_line}: an override needs a key, e.g. model.n_components=5")
        retired = command_line_message(key)
        if retired:
            raise ConfigError(f"{override.input_line}: {retired}")
        if override.is_delete() and not key.lstrip("~").startswith(DELETABLE):
            raise ConfigError(
                f"{override.input_line}: only a callback, a logger or an optimizer/scheduler argument can be "
                "removed (e.g. ~callbacks.figures); set the value you want instead"
            )
        if override.is_sweep_override():
            concrete.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
            values = [] if override.is_interval_sweep() else list(override.sweep_iterator())
        else:
            concrete.append(override.input_line)
            value = None if override.is_delete() else override.value()
            values = list(value) if isinstance(value, list) else [value]
        name = key.lstrip("+")
        if name in rules and not override.is_delete():
            for value in values:
                if not (isinstance(value, str) and "${" in value):  # an interpolation resolves in the config
                    rules[name].require(name, value)
        group = key.lstrip("+~").split("@")[0]
        if "." in group or not (CONF_DIR / group).is_dir() or override.is_delete():
            continue
        options = group_options(group)
        for value in values:
            if isinstance(value, str) and value.startswith("_"):
                what = f"{value} is a building block of {group}/, not an option"
            elif not isinstance(value, str):  # a number, a list, null (`logger=null`)
                what = f"{'null' if value is None else repr(value)} is not an option of {group}/"
            else:
                continue  # a name Hydra looks up (and refuses, listing the options, if it is none)
            raise ConfigError(f"{override.input_line}: {what}; choose one of: {', '.join(options)}")
    return concrete


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files, without the `_`-prefixed building blocks."""
    return sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml") if not f.stem.startswith("_"))


def hydra_message(error: Exception) -> str:
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


def omegaconf_message(error: OmegaConfBaseException) -> str:
    """An OmegaConf error (e.g. an interpolation to a missing key) as one line that names the key."""
    key = getattr(error, "full_key", None)
    text = hydra_message(error)
    return f"{key}: {text}" if key and not text.startswith(str(key)) else text


def compose_config(config_name: str, overrides: list[str], extra_dirs: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_resolvers()
    if extra_dirs:
        overrides = [*overrides, f"hydra.searchpath=[{','.join('file://' + d for d in extra_dirs)}]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as error:  # ValueError: a group override
        raise ConfigError(hydra_message(error)) from None
    finally:
        GlobalHydra.instance().clear()


def check_writable(path_text: object, key: str) -> Path:
    """A directory the run can create and write: tried (a temporary directory made and removed in the
    nearest existing parent), not guessed from permission bits."""
    if not isinstance(path_text, str) or not path_text.strip():
        raise ConfigError(f"{key}={path_text!r} is not allowed: give a directory")
    path = Path(path_text).absolute()
    long = [part for part in path.parts if len(part.encode()) > NAME_MAX]
    if long or len(str(path).encode()) > PATH_MAX:
        raise ConfigError(
            f"{key}={path_text} is too long: each name at most {NAME_MAX} bytes, the path at most {PATH_MAX}"
        )
    parent = path
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}={path_text} cannot be created: {parent} is a file, not a directory")
    try:
        probe = parent / f".dpn_lab_write_test_{os.getpid()}"  # one try (mkdtemp retries 10^4 names in /proc)
        probe.mkdir()
        probe.rmdir()
    except OSError as error:
        raise ConfigError(f"{key}={path_text} is not writable: {error.strerror} in {parent}") from None
    return path


def check_outputs(cfg: DictConfig, multirun: bool) -> None:
    """The run (or sweep) directory and an explicitly placed checkpoint directory can be written, and the
    run directory is not in use by another process."""
    from omegaconf.errors import InterpolationResolutionError

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    run_dir = check_writable(OmegaConf.select(cfg, key, throw_on_missing=False), key)
    if not multirun and run_dir.is_dir() and not is_ddp_child():  # ranks > 0 run in rank 0's directory
        check_run_directory_free(run_dir, key)
    try:  # by default it lies inside the run directory, known only once Hydra starts the job
        checkpoint_dir = OmegaConf.select(cfg, "paths.checkpoint_dir")
    except InterpolationResolutionError:
        checkpoint_dir = None
    if checkpoint_dir is not None:
        check_writable(checkpoint_dir, "paths.checkpoint_dir")


def check_environment(cfg: DictConfig, multirun: bool) -> None:
    """What would hang or fail late outside the right environment: several nodes without a cluster that
    starts them, and a SLURM launcher without SLURM."""
    launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))
    slurm = launcher.endswith("SlurmLauncher")
    if multirun and slurm and shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH: run on a SLURM login node, "
            "or use hydra/launcher=submitit_local (or the default launcher)"
        )
    nodes = OmegaConf.select(cfg, "trainer.num_nodes", default=1)
    if (
        isinstance(nodes, int)
        and nodes > 1
        and not (slurm or any(v in os.environ for v in CLUSTER_VARIABLES))
    ):
        raise ConfigError(
            f"trainer.num_nodes={nodes} needs a cluster that starts every node's processes (SLURM, torchrun, "
            "LSF, MPI) and none was detected: outside one the run would wait forever for the other nodes; "
            "use trainer.num_nodes=1 here"
        )
