"""Request dependencies: the service, the authenticated client, size-limited bodies."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fl_server.domain import BodyReader
from fl_server.errors import (
    BodyTooLargeError,
    ContentLengthInvalidError,
    EncodingUnsupportedError,
    ServerBusyError,
)
from fl_server.service import ServerService
from hefl_wire import AccessClaims

__all__ = ["CurrentClient", "RequestBody", "Service", "read_body"]

_bearer = HTTPBearer(
    auto_error=False, description="a client access token from keyauth's POST /v1/token"
)


async def get_service(request: Request) -> ServerService:
    service: ServerService | None = request.app.state.service
    if service is None:
        raise ServerBusyError("the server is starting or stopping", retry_after=1)
    return service


Service = Annotated[ServerService, Depends(get_service)]


async def current_client(
    service: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AccessClaims:
    return service.authenticate(credentials.credentials if credentials is not None else "")


CurrentClient = Annotated[AccessClaims, Depends(current_client)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes.

    A declared ``Content-Length`` is checked before a byte is read; a streamed body is
    counted as it arrives, so an oversized one is never held whole. A body in a content
    coding (gzip, ...) is refused with 415: the server never inflates what a client sends.
    """
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise EncodingUnsupportedError("Content-Encoding is not supported: send the body as is")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ContentLengthInvalidError("Content-Length is not a number")
        if int(declared) > limit:
            raise BodyTooLargeError(f"body of {declared} bytes exceeds the {limit} allowed")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"body exceeds the {limit} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


async def body_reader(request: Request) -> BodyReader:
    """Reads this request's body when the service asks, within the limit it names."""
    return partial(read_body, request)


RequestBody = Annotated[BodyReader, Depends(body_reader)]
