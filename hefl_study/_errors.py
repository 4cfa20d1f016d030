"""``SpecError``: every problem of a study spec at once, each with where it is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Problem", "SpecError"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec.

    Attributes
    ----------
    location
        Where, as a path into the spec: ``data.features[2].categories`` (``spec`` for
        the document as a whole, ``line 3`` for a TOML syntax error).
    message
        A plain sentence saying what is wrong and, where it can, what would be right.
    """

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class SpecError(Exception):
    """A study spec that cannot be used; ``problems`` lists every problem found.

    Not a ``ValueError`` on purpose: pydantic would wrap a ``ValueError`` raised in a
    validator into its own error, and this one must reach the caller as it is.
    """

    def __init__(self, problems: Iterable[Problem], source: str = "study spec") -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source} has {count} problem{'' if count == 1 else 's'}:"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))
