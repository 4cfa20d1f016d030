"""The base of each service's exception tree: a stable ``code``, an HTTP status and a title."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["ProblemError", "bearer_challenge"]


class ProblemError(Exception):
    """An error the HTTP edge answers with an ``application/problem+json`` body.

    Each service derives its one exception tree from it (``keyauth.errors.KeyauthError``,
    ``fl_server.errors.ServerError``) and installs ``hefl_http.problems.add_problem_handlers``
    for that tree only. ``code`` and ``http_status`` come from the class; an instance may
    override them (a translated or rebuilt error keeps the code it was given).
    """

    code: str = "internal_error"
    http_status: int = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str, *, code: str | None = None, http_status: int | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status

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
