"""The version bounds are true: every dependency's lower bound in pyproject.toml is the version that
constraints.txt pins, and that is the version this suite runs with. A bound raised or lowered without
testing it, a pin without a dependency, or an environment that drifted from the pins fails here."""

import sys
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement

from conftest import ROOT


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            found[name] = pinned
    return found


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def no_deps() -> set[str]:
    """What the Makefile installs without dependencies (NO_DEPS), which pyproject.toml cannot list."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("NO_DEPS :="):
            return set(line.partition(":=")[2].split())
    return set()


def test_every_lower_bound_is_the_pinned_version():
    pinned = {name: v for name, v in pins().items() if name not in no_deps()}
    for requirement in requirements():
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert lower == [pinned.get(requirement.name)], (
            f"{requirement}: its lower bound must be the version constraints.txt pins "
            f"({pinned.get(requirement.name)}), the one the suite runs with"
        )
    assert set(pinned) == {r.name for r in requirements()}, "a pin without a dependency, or the reverse"
    assert no_deps() <= set(pins()), "a package installed with --no-deps but not pinned"


def test_the_suite_runs_with_the_pinned_versions():
    drifted = {name: (version(name), pinned) for name, pinned in pins().items() if version(name) != pinned}
    assert not drifted, f"installed != constraints.txt (run `make install`): {drifted}"


def test_the_python_bound_admits_this_python():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={sys.version_info.major}.{sys.version_info.minor}"
