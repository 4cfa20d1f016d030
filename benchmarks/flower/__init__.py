"""hefl and Flower side by side on Fed-Heart-Disease (``python -m benchmarks.flower``)."""

from benchmarks.flower._compare import compare, rerender, write
from benchmarks.flower._deploy import venv_problem
from benchmarks.flower._render import render

__all__ = ["compare", "render", "rerender", "venv_problem", "write"]
