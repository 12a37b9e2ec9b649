"""The pages a reader follows: every relative link and image of README.md and docs/*.md resolves."""

import re

import pytest

from conftest import ROOT
from dpn_lab.results import pages

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page):
    for number, line in enumerate(page.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
                yield number, target


@pytest.mark.parametrize("page", pages(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_image_resolves(page):
    missing = [
        f"{page.relative_to(ROOT)}:{number}: {target}"
        for number, target in _relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not missing, "links that do not resolve:\n" + "\n".join(missing)
