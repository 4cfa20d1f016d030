"""hefl and Flower side by side on Fed-Heart-Disease (``python -m benchmarks.flower``)."""

# The public names load on first use (PEP 562): the ClientApp imports ``_data`` in each
# Flower process, and should not pay for the comparison harness this package also holds.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.flower._compare import compare, rerender, write
    from benchmarks.flower._deploy import venv_problem
    from benchmarks.flower._render import render

__all__ = ["compare", "render", "rerender", "venv_problem", "write"]

# which module defines each public name
_MODULE_OF: dict[str, str] = {
    "compare": "benchmarks.flower._compare",
    "render": "benchmarks.flower._render",
    "rerender": "benchmarks.flower._compare",
    "venv_problem": "benchmarks.flower._deploy",
    "write": "benchmarks.flower._compare",
}


# not seen by mypy: then an unknown name is still an error, not an ``object``
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
