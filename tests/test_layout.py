"""The package's layout: commands are leaves, the top level stays small, the corruption table of
docs/evaluation.md is the registry."""

import ast
import re
from pathlib import Path

from dpn_lab.data.corruption import CORRUPTIONS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dpn_lab"
COMMANDS = ("train", "eval", "analyze")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_no_module_imports_a_command():
    for path in PACKAGE.rglob("*.py"):
        found = imported_modules(path) & {f"dpn_lab.{command}" for command in COMMANDS}
        assert not found, f"{path.relative_to(ROOT)} imports {found}"


def test_at_most_eight_top_level_modules():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert set(COMMANDS) <= modules and len(modules) <= 8, sorted(modules)


def test_the_documented_corruption_table_is_the_registry():
    rows = re.findall(
        r"^\| `(\w+)` \| (.+?) \| (.+?) \| (.+?) \|$", (ROOT / "docs" / "evaluation.md").read_text(), re.M
    )
    table = {kind: (unit, limit, meaning) for kind, unit, limit, meaning in rows if kind in CORRUPTIONS}
    assert set(table) == set(CORRUPTIONS)
    for kind, spec in CORRUPTIONS.items():
        limit = "none" if spec.max_severity is None else f"{spec.max_severity:g}"
        assert table[kind] == (spec.unit, limit, spec.meaning), kind
