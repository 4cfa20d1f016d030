"""Request dependencies: the service, the job, the authenticated caller, size-limited bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fl_server.domain import BodyReader
from fl_server.errors import (
    BodyTooLargeError,
    ContentLengthInvalidError,
    EncodingUnsupportedError,
    ServerBusyError,
)
from fl_server.job_service import JobService
from fl_server.service import ServerService
from hefl_wire import AccessClaims

__all__ = [
    "CurrentAdmin",
    "CurrentClient",
    "CurrentJob",
    "CurrentReader",
    "RequestBody",
    "Service",
    "StatusAccess",
    "read_body",
    "stream_body",
]

_bearer = HTTPBearer(
    auto_error=False,
    description="an access token from keyauth: a client's (POST /v1/token) or the "
    "administrator's (POST /v1/admin/token), as each route says",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_service(request: Request) -> ServerService:
    service: ServerService | None = request.app.state.service
    if service is None:
        raise ServerBusyError("the server is starting or stopping", retry_after=1)
    return service


Service = Annotated[ServerService, Depends(get_service)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    return credentials.credentials if credentials is not None else ""


async def current_client(service: Service, credentials: Bearer) -> AccessClaims:
    return service.authenticate_client(_token(credentials))


async def current_admin(service: Service, credentials: Bearer) -> AccessClaims:
    return service.authenticate_admin(_token(credentials))


async def current_reader(service: Service, credentials: Bearer) -> AccessClaims:
    return service.authenticate_reader(_token(credentials))


async def status_access(
    request: Request, service: Service, credentials: Bearer
) -> AccessClaims | None:
    # The status names the hospitals and their activity: by default (token) nobody without a
    # token from keyauth reads it; public is an opt-in (docs/fl_server.md, "The operator page").
    if request.app.state.settings.status_access == "public":
        return None
    return service.authenticate_status_reader(_token(credentials))


CurrentClient = Annotated[AccessClaims, Depends(current_client)]
CurrentAdmin = Annotated[AccessClaims, Depends(current_admin)]
CurrentReader = Annotated[AccessClaims, Depends(current_reader)]
StatusAccess = Annotated[AccessClaims | None, Depends(status_access)]


async def current_job(
    service: Service, job: Annotated[str, Path(description="the job's name (its spec's name)")]
) -> JobService:
    return service.job(job)


CurrentJob = Annotated[JobService, Depends(current_job)]


async def stream_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused with 413 as soon as it is known to exceed
    ``limit`` bytes.

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
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"body exceeds the {limit} bytes allowed")
        if chunk:
            yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The request body whole, with ``stream_body``'s checks."""
    return b"".join([chunk async for chunk in stream_body(request, limit)])


@dataclass(frozen=True)
class _RequestBody:
    """Reads this request's body when the service asks, within the limit it names: whole
    (called), or chunk by chunk (``chunks``)."""

    request: Request

    async def __call__(self, limit: int) -> bytes:
        return await read_body(self.request, limit)

    def chunks(self, limit: int) -> AsyncIterator[bytes]:
        return stream_body(self.request, limit)


async def body_reader(request: Request) -> BodyReader:
    """Reads this request's body when the service asks, within the limit it names."""
    return _RequestBody(request)


RequestBody = Annotated[BodyReader, Depends(body_reader)]
