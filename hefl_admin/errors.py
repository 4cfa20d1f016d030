"""The one exception tree of ``hefl-admin``: what it reports on one line, and its exit status.

::

    AdminError              the base: a message for ``hefl-admin: ...``; exit 2
    ├── UnreachableError    keyauth or fl_server could not be reached (exit 2)
    └── InputError          the command's own input is unusable: the admin key file, a
                            study spec (exit 2); nothing was sent

    hefl_wire.ProblemError  a service refused (its problem's ``code``, exit 1); built with
                            ``ProblemError.from_answer``, as the service said it

``cli.main`` prints each and returns its status; nothing else reaches the user as a
traceback. Messages never contain the admin key or a token.
"""

from __future__ import annotations

from hefl_wire import ProblemError

__all__ = ["REFUSED", "UNUSABLE", "AdminError", "InputError", "UnreachableError", "refusal"]

# Exit statuses: 1 when a service refused, 2 for a usage or connection problem.
REFUSED = 1
UNUSABLE = 2


class AdminError(Exception):
    """Something ``hefl-admin`` cannot do; ``str(error)`` is the message it prints."""

    exit_status = UNUSABLE


class UnreachableError(AdminError):
    """A service did not answer: refused connection, timeout, TLS failure."""


class InputError(AdminError):
    """Input of the command itself is unusable (an unreadable file, an invalid spec)."""


def refusal(detail: str, *, code: str, http_status: int) -> ProblemError:
    """A refusal as a service would answer it (also for one ``hefl-admin`` knows in advance,
    such as a missing admin key): printed as ``code: detail``, exit 1."""
    return ProblemError.from_answer(detail, code=code, http_status=http_status)
