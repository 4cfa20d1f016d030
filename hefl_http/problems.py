"""problem+json responses and the exception handlers both services install."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException

from hefl_wire import ProblemError

__all__ = [
    "HTTP_EXCEPTION_CODES",
    "PROBLEM_MEDIA_TYPE",
    "ExceptionHandler",
    "add_problem_handlers",
    "error_response",
    "problem_response",
    "validation_error_handler",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_MAX_DETAIL_CHARS = 1000

ExceptionHandler = Callable[[Request, Exception], Awaitable[JSONResponse]]

# The codes of the HTTPExceptions the services meet: routing's 404 and 405, and FastAPI's
# 400 for a body it could not parse (JSON that is not UTF-8). Each is in hefl_wire's
# registry; any other status would be answered as http_<status>.
HTTP_EXCEPTION_CODES = {400: "http_400", 404: "not_found", 405: "method_not_allowed"}


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 9457 problem with hefl's stable machine-readable ``code``."""
    body: dict[str, Any] = {
        "type": "about:blank",  # docs/protocol.md: the stable identity is `code`
        "title": title,
        "status": status,
        "detail": detail[:_MAX_DETAIL_CHARS],
        "code": code,
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def error_response(error: ProblemError) -> JSONResponse:
    """The problem answer for ``error``: its status, code, title, extra members and headers."""
    headers = dict(error.headers)
    challenge = error.challenge
    if error.http_status == 401 and challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return problem_response(
        error.http_status, error.code, error.title, error.detail, extra=error.extra, headers=headers
    )


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 ``request_invalid``, naming each rejected field and why."""
    assert isinstance(exc, RequestValidationError)
    # Never echo the input: a rejected field may be a secret.
    detail = "; ".join(
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    )
    return problem_response(422, "request_invalid", "Invalid request", detail)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_EXCEPTION_CODES.get(exc.status_code, f"http_{exc.status_code}")
    detail = str(exc.detail) if exc.detail else "HTTP error"
    return problem_response(exc.status_code, code, detail, detail, headers=dict(exc.headers or {}))


async def _unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # The exception itself is logged by the server; its text may not reach the caller.
    return problem_response(500, "internal_error", "Internal error", "an unexpected error occurred")


def add_problem_handlers(
    app: Starlette,
    errors: type[ProblemError] | tuple[type[ProblemError], ...],
    logger: logging.Logger,
    *,
    validation: ExceptionHandler = validation_error_handler,
) -> None:
    """Have ``app`` answer every error as problem+json.

    Parameters
    ----------
    app
        The service's app.
    errors
        The base of the service's own exception tree, or the bases of the trees it answers
        (keyauth also answers ``hefl_wire.TokenError`` as it is). Only they are answered
        with their code and status: another tree's error (another service's, raised
        through a library) stays an unexpected 500, as any other exception.
    logger
        Where errors answered with a 5xx status are logged.
    validation
        The handler for request validation errors (``validation_error_handler`` unless
        the service tells more cases apart).
    """

    async def problem_error_handler(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors)
        if exc.http_status >= 500:
            logger.error("%s %s failed: %s (%s)", request.method, request.url.path, exc.code, exc)
        return error_response(exc)

    bases = errors if isinstance(errors, tuple) else (errors,)
    handlers: dict[type[Exception], ExceptionHandler] = {
        **dict.fromkeys(bases, problem_error_handler),
        RequestValidationError: validation,
        StarletteHTTPException: _http_error_handler,
        Exception: _unexpected_error_handler,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)
