"""The base of every error a service answers: a registered ``code``, its HTTP status, a title."""

from __future__ import annotations

from typing import Any, ClassVar, Self

from hefl_wire._problems import check_problem

__all__ = ["ProblemError", "bearer_challenge"]


class ProblemError(Exception):
    """An error a service answers with an ``application/problem+json`` body.

    Each service derives its exception tree from it (``keyauth.errors.KeyauthError``,
    ``fl_server.errors.ServerError``) and has ``hefl_http.problems.add_problem_handlers``
    answer that tree. Each class declares its ``code``, the ``http_status`` hefl_wire's
    registry gives that code, and a ``title`` (part of the wire answer); code and status
    are checked when the class is defined, so a raise site names a class and can answer
    nothing the contract does not hold.

    Raises
    ------
    ProblemCodeError
        When a subclass is defined with a code the registry does not hold, or another
        status than the registry's.
    """

    code: str = "internal_error"
    http_status: int = 500
    title: ClassVar[str] = "Internal error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_problem(cls.code, cls.http_status, where=cls.__qualname__)

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @classmethod
    def from_answer(cls, detail: str, *, code: str, http_status: int) -> Self:
        """The error as another party answered it, its ``code`` and status kept unchecked.

        For a client rebuilding an answer (``hefl-admin``'s refusals): a proxy's
        502 or a newer service's code is what was said, not what this side raises.
        """
        error = cls(detail)
        error.code = code
        error.http_status = http_status
        return error

    @property
    def extra(self) -> dict[str, Any]:
        """Additional problem members (e.g. ``current_version``)."""
        return {}

    @property
    def headers(self) -> dict[str, str]:
        """Additional response headers (e.g. ``Retry-After``)."""
        return {}

    @property
    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` challenge sent when the answer is 401, if any."""
        return None


def bearer_challenge(code: str) -> str:
    """The ``WWW-Authenticate`` value for an access token refused with ``code`` (RFC 6750)."""
    challenge = 'Bearer realm="hefl"'
    if code != "token_missing":
        challenge += ', error="invalid_token"'
    return challenge
