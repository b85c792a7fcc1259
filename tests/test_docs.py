"""The docs against the code: the generated reference tables are current, every link inside the repository points
at a file that exists and none points outside it, and the user-facing pages speak of sections, not work sessions."""

import glob
import os
import re

import pytest

from conftest import ROOT

PAGES = ["README.md", "benchmarks/README.md", *sorted(glob.glob("docs/*.md", root_dir=ROOT))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_generated_tables_match_the_code():
    from resnetbk import doc_tables

    assert doc_tables.main(["--check"]) == 0, "run python -m resnetbk.doc_tables"


@pytest.mark.parametrize("page", PAGES)
def test_links_stay_inside_the_repository_and_resolve(page):
    text = open(os.path.join(ROOT, page)).read()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), target.split("#")[0]))
        assert path.startswith(ROOT + os.sep), f"{page}: {target} points outside the repository"
        assert os.path.exists(path), f"{page}: {target} does not exist"


@pytest.mark.parametrize("page", PAGES)
def test_pages_cite_sections_not_work_sessions(page):
    text = open(os.path.join(ROOT, page)).read()
    found = re.findall(r"\b(?:sessions? \d+|issues? \d+|the issue's)\b", text, re.I)
    assert not found, f"{page}: {found[:3]} (history belongs in docs/history/)"
