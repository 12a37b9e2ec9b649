"""The pages a reader follows: every relative link and image of README.md and docs/*.md resolves, and every
`python -m dpn_lab.<command> ...` line in their code blocks composes (what `--cfg job` checks, before torch
loads)."""

import re
import shlex

import pytest

from conftest import ROOT
from dpn_lab.errors import ConfigError
from dpn_lab.results import pages
from dpn_lab.runs.preflight import compose_config, concrete_overrides, parse_flags

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"^\s{4,}(?:srun )?python -m dpn_lab\.(train|eval|analyze)\b(.*)$")
PLACEHOLDER = re.compile(r"<(\w+(?: \w+)*)>")
PAGES = pages(ROOT)


def _relative_links(page):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
                yield number, target


def documented_commands(text: str):
    """(line number, command, arguments) of every command line of an indented code block; a line ending in
    a backslash continues on the next, a `#` outside quotes starts a comment. What the reader fills in stays
    out: a placeholder `<run>` is checked as `run`, and a lone `...` (your other overrides) is dropped."""
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        start, line = number + 1, lines[number]
        while line.endswith("\\") and number + 1 < len(lines):
            number += 1
            line = line[:-1] + " " + lines[number].strip()
        number += 1
        found = COMMAND.match(line)
        if found:
            lexer = shlex.shlex(found.group(2), posix=True, punctuation_chars=False)
            lexer.whitespace_split, lexer.commenters = True, "#"
            yield start, found.group(1), [PLACEHOLDER.sub(r"\1", arg) for arg in lexer if arg != "..."]


def composition_error(command: str, argv: list[str]) -> str | None:
    """Why `python -m dpn_lab.<command> <argv>` does not compose, or None."""
    try:
        flags = parse_flags(argv)
        compose_config(flags.config_name or command, concrete_overrides(flags.overrides, command), [])
    except ConfigError as error:
        return str(error)
    return None


def test_a_command_that_does_not_compose_is_caught():
    assert "model.bogus" in composition_error("train", ["model.bogus=1"])
    assert "recipe" in composition_error("train", ["recipe=nonsense"])
    assert composition_error("train", ["-m", "recipe=adversarial", "seed=0,1"]) is None


def test_documented_commands_are_found_across_continued_lines():
    text = "    python -m dpn_lab.train -m a=1,2 ... \\\n        b=<run>/c   # c=4\nprose python -m dpn_lab.eval x=1\n"
    assert list(documented_commands(text)) == [(1, "train", ["-m", "a=1,2", "b=run/c"])]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    missing = [
        f"{page.relative_to(ROOT)}:{number}: {target}"
        for number, target in _relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not missing, "links that do not resolve:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_composes(page):
    failures = []
    for number, command, argv in documented_commands(page.read_text()):
        error = composition_error(command, argv)
        if error:
            failures.append(f"{page.relative_to(ROOT)}:{number}: python -m dpn_lab.{command}: {error}")
    assert not failures, "documented commands that do not compose:\n" + "\n".join(failures)
