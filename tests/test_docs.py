"""The project's documents: readable sizes, and relative links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# the largest document is about 100 KB; a scripted edit that went wrong once made one 50 MB
MAX_BYTES = 256 * 1024
# [text](target) with a relative target (no scheme, not only an anchor)
_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s#]+)(?:#[^)\s]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_document_size_is_readable(doc: Path) -> None:
    assert doc.stat().st_size <= MAX_BYTES, f"{doc.name} is {doc.stat().st_size:,} bytes"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    missing = [
        target
        for target in _LINK.findall(doc.read_text(encoding="utf-8"))
        if not (doc.parent / target).exists()
    ]
    assert not missing, f"{doc.name} links to missing files: {missing}"
