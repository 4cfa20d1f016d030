"""The keyauth ASGI app: ``create_app(settings)``, and ``app`` built from the environment.

``uvicorn keyauth.app:app --port 8700`` reads the settings from the environment when uvicorn
looks ``app`` up, not at import, so importing this module creates no state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hefl_http.problems import (
    PROBLEM_MEDIA_TYPE,
    add_problem_handlers,
    error_response,
    problem_response,
    validation_error_handler,
)
from hefl_http.serving import HEFL_VERSION, configure_logging, lazy_app, settings_reasons
from hefl_wire import TokenError
from keyauth.errors import BodyTooLargeError, KeyauthError, SettingsError
from keyauth.routes import router
from keyauth.service import KeyAuthority
from keyauth.settings import KeyauthSettings
from keyauth.store import open_store

__all__ = ["PROBLEM_MEDIA_TYPE", "BodySizeLimitMiddleware", "create_app", "create_app_from_env"]

logger = logging.getLogger("keyauth")


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return problem_response(
            400, "body_malformed", "Malformed body", "the body is not valid JSON"
        )
    content_type = request.headers.get("content-type")
    if (
        content_type
        and not _is_json(content_type)
        and any(error.get("loc", ("",))[0] == "body" for error in errors)
    ):
        return problem_response(
            415,
            "unsupported_media_type",
            "Unsupported media type",
            f"send the body as application/json, not {content_type.split(';')[0]!r}",
        )
    return await validation_error_handler(request, exc)


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_body_bytes`` before reading them whole.

    A declared ``Content-Length`` beyond the limit is refused without reading a byte; a
    chunked body is read only until it passes the limit. A body within the limit is
    buffered (keyauth's bodies are a few hundred bytes) and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = BodyTooLargeError(f"request bodies are limited to {self.max_body_bytes} bytes")
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                response = problem_response(
                    400, "content_length_invalid", "Invalid Content-Length", "not a byte count"
                )
                await response(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                await error_response(too_large)(scope, receive, send)
                return
        body = bytearray()
        more_body = True
        while more_body:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more_body = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await error_response(too_large)(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(settings: KeyauthSettings) -> FastAPI:
    """The key authority app. State is opened at startup (lifespan), not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def start() -> KeyAuthority:
            store = open_store(settings.state_dir)
            try:
                return KeyAuthority(settings, store)
            except BaseException:
                store.close()
                raise

        authority = await anyio.to_thread.run_sync(start)
        app.state.authority = authority
        logger.info(
            "serving key epoch %d from %s",
            authority.current_epoch().epoch,
            settings.state_dir,
        )
        try:
            yield
        finally:
            app.state.authority = None
            authority.store.close()

    app = FastAPI(
        title="hefl keyauth",
        summary="CKKS key material and client identity for hefl",
        version=HEFL_VERSION,
        lifespan=lifespan,
    )
    app.state.authority = None
    app.include_router(router)
    # Token errors are the wire contract's, answered as they are (with their own title).
    add_problem_handlers(
        app, (KeyauthError, TokenError), logger, validation=_validation_error_handler
    )
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


def create_app_from_env() -> FastAPI:
    """``create_app`` with settings from ``KEYAUTH_*``: what uvicorn serves."""
    try:
        settings = KeyauthSettings()
    except ValidationError as exc:
        raise SettingsError(f"invalid KEYAUTH_* settings: {settings_reasons(exc)}") from None
    configure_logging("keyauth", settings.log_level)
    return create_app(settings)


# ``uvicorn keyauth.app:app`` looks ``app`` up here: build it then, and only once.
__getattr__ = lazy_app(__name__, create_app_from_env)
