"""docs/modules.md lists every module with the first line of its docstring."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "crypto",
    "hefl_wire",
    "hefl_http",
    "hefl_durable",
    "hefl_study",
    "keyauth",
    "fl_server",
    "fl_client",
    "hefl_admin",
    "harness",
    "deploy",
    "benchmarks",
)


def _documented() -> dict[str, str]:
    text = (ROOT / "docs" / "modules.md").read_text(encoding="utf-8")
    rows: dict[str, str] = {}
    package = ""
    for line in text.splitlines():
        heading = re.fullmatch(r"\*\*`([a-z_]+)/`\*\*", line)
        if heading:
            package = heading.group(1)
        row = re.fullmatch(r"\| `([^`]+)` \| (.*) \|", line)
        if row and package:
            rows[f"{package}/{row.group(1)}"] = row.group(2)
    return rows


def _modules() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            # benchmarks/flower/.venv is the Flower benchmark's own venv (setup.sh)
            if path.name == "__main__.py" or ".venv" in path.relative_to(ROOT).parts:
                continue
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            found[str(path.relative_to(ROOT))] = doc.strip().split("\n")[0]
    return found


def test_the_map_parses() -> None:
    # A parser that finds nothing would pass every comparison below.
    assert len(_documented()) > 100


@pytest.mark.parametrize(("module", "first_line"), sorted(_modules().items()))
def test_every_module_is_on_the_map(module: str, first_line: str) -> None:
    documented = _documented()

    assert module in documented, f"{module} is missing from docs/modules.md"
    assert documented[module] == first_line, f"{module}: docs/modules.md differs"


def test_the_map_names_no_module_that_is_gone() -> None:
    assert sorted(set(_documented()) - set(_modules())) == []
