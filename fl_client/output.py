"""What the client shows: tqdm progress bars and readable lines, JSON lines, or nothing.

* ``human``: progress bars on stderr, one readable line per event on stdout.
* ``json``: one JSON object per event on stdout (``{"event": ..., ...}``), no bars.
* ``quiet``: nothing but errors (which the CLI prints to stderr).

Events carry numbers and identifiers only; never a token, secret or key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

from fl_client.settings import OutputMode

__all__ = ["ProgressBar", "Reporter"]


class ProgressBar(Protocol):
    def update(self, n: float = 1) -> object: ...


class _NoBar:
    def update(self, n: float = 1) -> object:
        return None


def _human(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}={_human(v)}" for k, v in value.items()) + "}"
    return str(value)


class Reporter:
    """Progress bars and events for one output mode.

    Parameters
    ----------
    mode
        ``human``, ``json`` or ``quiet``.
    out, err
        Where events and bars go (stdout and stderr by default).
    """

    def __init__(
        self, mode: OutputMode = "human", *, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.mode = mode
        self._out = out or sys.stdout
        self._err = err or sys.stderr

    @contextmanager
    def bar(
        self, total: float | None, desc: str, unit: str = "it", *, unit_scale: bool = False
    ) -> Iterator[ProgressBar]:
        """A progress bar in human mode, a no-op otherwise."""
        if self.mode != "human":
            yield _NoBar()
            return
        with tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            unit_divisor=1024 if unit == "B" else 1000,
            file=self._err,
            leave=False,
            dynamic_ncols=True,
        ) as progress:
            yield progress

    def event(self, name: str, /, **fields: Any) -> None:
        """Report something that happened: a round's numbers, a resend, the end."""
        if self.mode == "json":
            self._out.write(json.dumps({"event": name, **fields}, sort_keys=True) + "\n")
            self._out.flush()
        elif self.mode == "human":
            text = " ".join(f"{k}={_human(v)}" for k, v in fields.items())
            self._out.write(f"[{name}] {text}\n".rstrip() + "\n" if text else f"[{name}]\n")
            self._out.flush()

    def warn(self, message: str) -> None:
        """A problem that did not stop the client (printed in every mode but json)."""
        if self.mode == "json":
            self.event("warning", message=message)
        else:
            self._err.write(f"warning: {message}\n")
            self._err.flush()
