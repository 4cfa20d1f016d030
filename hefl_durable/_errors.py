"""The one error of this package: a path another user could read or change."""

from __future__ import annotations

from pathlib import Path

__all__ = ["UnsafePathError"]


class UnsafePathError(Exception):
    """A path refused because another user owns it or can reach into it.

    Raised instead of using the path: tightening permissions afterwards cannot undo what
    another user may already have read or replaced. ``str()`` is ``"<path> <reason>"``, a
    sentence that tells the operator what to fix.

    Attributes
    ----------
    path
        The refused file or directory.
    reason
        What is wrong with it, e.g. ``"belongs to another user"``.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason
