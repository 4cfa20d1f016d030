"""The public surface of ``hefl_durable``: its ``__all__``, and nothing but the stdlib."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import hefl_durable


def test_every_public_name_exists_once_in_order() -> None:
    for name in hefl_durable.__all__:
        assert hasattr(hefl_durable, name), name
    assert sorted(set(hefl_durable.__all__)) == hefl_durable.__all__


def test_only_the_standard_library_is_imported() -> None:
    imported: set[str] = set()
    for path in Path(hefl_durable.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

    assert imported - {"hefl_durable"} <= sys.stdlib_module_names
