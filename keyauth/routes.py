"""The v1 REST routes: each parses, authenticates, calls the authority and returns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status

from hefl_http.conditional import etag_matches
from keyauth.deps import AdminAccess, Authority, BearerToken
from keyauth.schemas import (
    AccessTokenPublic,
    AdminTokenPublic,
    ClientPublic,
    EnrollmentPublic,
    EnrollmentTokenCreate,
    EnrollmentTokenPublic,
    EnrollRequest,
    HealthPublic,
    KeyEpochPublic,
    KeyIdPublic,
    RevocationsPublic,
    TokenRequest,
    VerificationKeyPublic,
    ViewerTokenCreate,
)
from keyauth.store import KeyEpoch

__all__ = ["router"]

router = APIRouter()

EpochQuery = Annotated[
    int | None, Query(ge=1, le=2**31 - 1, description="A key epoch; the current one if absent")
]
# Credentials and keys must not linger in caches or proxies.
_NO_STORE = {"Cache-Control": "no-store"}


def _context_response(epoch: KeyEpoch, payload: bytes, *, private: bool) -> Response:
    headers = {"X-Hefl-Key-Epoch": str(epoch.epoch), "X-Hefl-Profile": epoch.profile_name}
    if private:
        # The id of the keys in the body: a hospital checks it against its job's key_id.
        headers["X-Hefl-Key-Id"] = epoch.key_id
        headers.update(_NO_STORE)
    return Response(payload, media_type="application/octet-stream", headers=headers)


@router.get("/healthz", tags=["public"])
def healthz(authority: Authority) -> HealthPublic:
    return HealthPublic(key_epoch=authority.current_epoch().epoch)


@router.post("/v1/enrollment-tokens", status_code=status.HTTP_201_CREATED, tags=["admin"])
def create_enrollment_token(
    body: EnrollmentTokenCreate, authority: Authority, _: AdminAccess, response: Response
) -> EnrollmentTokenPublic:
    response.headers.update(_NO_STORE)
    issued = authority.issue_enrollment_token(body.client_name, body.expires_in)
    return EnrollmentTokenPublic.of(issued)


@router.get("/v1/clients", tags=["admin"])
def list_clients(authority: Authority, _: AdminAccess) -> list[ClientPublic]:
    return [ClientPublic.of(client) for client in authority.list_clients()]


@router.delete("/v1/clients/{client_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["admin"])
def revoke_client(
    client_id: Annotated[str, Path(max_length=128)], authority: Authority, _: AdminAccess
) -> Response:
    authority.revoke_client(client_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/v1/key-epochs", status_code=status.HTTP_201_CREATED, tags=["admin"])
def rotate_key_epoch(authority: Authority, _: AdminAccess) -> KeyEpochPublic:
    epoch = authority.rotate_key_epoch()
    return KeyEpochPublic(key_epoch=epoch.epoch, profile=epoch.profile_name)


@router.post("/v1/admin/token", tags=["admin"])
def issue_admin_token(authority: Authority, _: AdminAccess, response: Response) -> AdminTokenPublic:
    response.headers.update(_NO_STORE)
    return AdminTokenPublic.of(authority.issue_admin_token())


@router.post("/v1/viewer/token", tags=["admin"])
def issue_viewer_token(
    authority: Authority,
    _: AdminAccess,
    response: Response,
    body: ViewerTokenCreate | None = None,
) -> AdminTokenPublic:
    response.headers.update(_NO_STORE)
    expires_in = body.expires_in if body is not None else None
    return AdminTokenPublic.of(authority.issue_viewer_token(expires_in))


@router.post(
    "/v1/enroll",
    status_code=status.HTTP_201_CREATED,
    tags=["client"],
    responses={
        200: {
            "model": EnrollmentPublic,
            "description": "The same unconfirmed enrollment, delivered again",
        }
    },
)
def enroll(body: EnrollRequest, authority: Authority, response: Response) -> EnrollmentPublic:
    response.headers.update(_NO_STORE)
    enrollment = authority.enroll(body.token)
    if enrollment.redelivered:
        # Nothing new was created: the same client id and secret as the first answer.
        response.status_code = status.HTTP_200_OK
    return EnrollmentPublic.of(enrollment)


@router.post("/v1/token", tags=["client"])
def issue_access_token(
    body: TokenRequest, authority: Authority, response: Response
) -> AccessTokenPublic:
    response.headers.update(_NO_STORE)
    issued = authority.issue_access_token(body.client_id, body.client_secret)
    return AccessTokenPublic.of(issued)


@router.get(
    "/v1/keys/secret-context",
    tags=["client"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def secret_context(authority: Authority, token: BearerToken, epoch: EpochQuery = None) -> Response:
    key_epoch = authority.secret_context(token, epoch)
    return _context_response(key_epoch, key_epoch.material.secret_context, private=True)


@router.get(
    "/v1/keys/public-context",
    tags=["public"],
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def public_context(authority: Authority, epoch: EpochQuery = None) -> Response:
    key_epoch = authority.key_epoch(epoch)
    return _context_response(key_epoch, key_epoch.material.public_context, private=False)


@router.get(
    "/v1/revocations",
    tags=["public"],
    response_model=RevocationsPublic,
    responses={304: {"description": "the list is still the one named by If-None-Match"}},
)
def revocations(
    authority: Authority,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
) -> Response:
    # Public like a certificate revocation list: client ids are random and reveal nothing.
    # fl_server asks twice a second with the ETag, so a revoked client is refused within
    # a second; the unchanged list costs it a 304 and no body.
    listed = authority.revocations()
    headers = {"ETag": listed.etag, "Cache-Control": "no-cache"}
    if etag_matches(if_none_match, listed.etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    body = RevocationsPublic(revoked=list(listed.client_ids)).model_dump_json()
    return Response(body, media_type="application/json", headers=headers)


@router.get("/v1/keys/key-id", tags=["public"])
def key_id(authority: Authority, epoch: EpochQuery = None) -> KeyIdPublic:
    return KeyIdPublic.of(authority.key_id(epoch))


@router.get("/v1/keys/verification-key", tags=["public"])
def verification_key(authority: Authority) -> VerificationKeyPublic:
    key = authority.verification_key()
    return VerificationKeyPublic(
        algorithm=key.algorithm,
        issuer=key.issuer,
        audience=key.audience,
        public_key_pem=key.public_key_pem,
        key_epoch=key.key_epoch,
        profile=key.profile_name,
    )
