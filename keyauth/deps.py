"""Annotated dependencies shared by the routes: the authority, admin access, bearer tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from hefl_wire import TokenInvalidError, TokenMissingError, is_loopback_host
from keyauth.errors import NotReadyError
from keyauth.service import KeyAuthority

__all__ = ["AdminAccess", "Authority", "BearerToken", "get_authority"]

# auto_error=False: a missing credential is answered by our problem handler, not FastAPI's.
_admin_key_header = APIKeyHeader(name="X-Admin-Key", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


def get_authority(request: Request) -> KeyAuthority:
    authority: KeyAuthority | None = getattr(request.app.state, "authority", None)
    if authority is None:
        raise NotReadyError("the key authority is not started")
    return authority


Authority = Annotated[KeyAuthority, Depends(get_authority)]


def require_admin(
    request: Request,
    authority: Authority,
    admin_key: Annotated[str | None, Security(_admin_key_header)],
) -> None:
    # The local address the request reached, not the bind setting: catches a --host mismatch.
    server = request.scope.get("server")
    local_host = str(server[0]) if server else ""
    authority.authenticate_admin(admin_key, via_loopback=is_loopback_host(local_host))


AdminAccess = Annotated[None, Depends(require_admin)]


def bearer_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    if credentials is None:
        if request.headers.get("authorization"):
            raise TokenInvalidError("the Authorization header must be 'Bearer <token>'")
        raise TokenMissingError("the Authorization: Bearer <token> header is required")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]
