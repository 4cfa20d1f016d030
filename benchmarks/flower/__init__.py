"""hefl and Flower side by side on Fed-Heart-Disease (``python -m benchmarks.flower``)."""

# The public names load on first use (PEP 562): the ClientApp imports ``_data`` in each
# Flower process, and should not pay for the comparison harness this package also holds.

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.flower._compare import compare, rerender, write
    from benchmarks.flower._deploy import venv_problem
    from benchmarks.flower._render import render

__all__ = ["compare", "render", "rerender", "venv_problem", "write"]

# the public names each submodule defines, loaded on first use (lazy_loader)
_LAZY: dict[str, list[str]] = {
    "_compare": ["compare", "rerender", "write"],
    "_deploy": ["venv_problem"],
    "_render": ["render"],
}


# not seen by mypy: then an unknown name is still an error, not an ``object``
if not TYPE_CHECKING:
    import lazy_loader

    __getattr__, __dir__, _ = lazy_loader.attach(__name__, submod_attrs=_LAZY)
