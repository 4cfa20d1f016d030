"""Request and response bodies of the REST API, split by role (Create / Public)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keyauth.service import CLIENT_NAME_PATTERN, Enrollment, IssuedEnrollmentToken, SignedKeyId
from keyauth.store import ClientRecord
from keyauth.tokens import IssuedToken

__all__ = [
    "AccessTokenPublic",
    "AdminTokenPublic",
    "ClientPublic",
    "EnrollRequest",
    "EnrollmentPublic",
    "EnrollmentTokenCreate",
    "EnrollmentTokenPublic",
    "HealthPublic",
    "KeyEpochPublic",
    "KeyIdPublic",
    "RevocationsPublic",
    "TokenRequest",
    "VerificationKeyPublic",
    "ViewerTokenCreate",
    "timestamp_to_datetime",
]

# Secrets and tokens are 43 characters; generous bounds still refuse megabyte strings.
_SECRET = Field(min_length=1, max_length=512)


def timestamp_to_datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class _Request(BaseModel):
    # Unknown fields are a client bug worth hearing about, not something to ignore.
    model_config = ConfigDict(extra="forbid")


class EnrollmentTokenCreate(_Request):
    client_name: str = Field(pattern=CLIENT_NAME_PATTERN, examples=["hospital-a"])
    expires_in: int | None = Field(
        default=None, description="Seconds the token stays valid; the configured default if absent"
    )


class ViewerTokenCreate(_Request):
    expires_in: int | None = Field(
        default=None,
        description="Seconds the token stays valid, at most KEYAUTH_VIEWER_TOKEN_TTL; that "
        "setting if absent (as it is when the request has no body)",
    )


class EnrollmentTokenPublic(BaseModel):
    token: str
    client_name: str
    expires_at: datetime

    @classmethod
    def of(cls, issued: IssuedEnrollmentToken) -> EnrollmentTokenPublic:
        return cls(
            token=issued.token,
            client_name=issued.client_name,
            expires_at=timestamp_to_datetime(issued.expires_at),
        )


class EnrollRequest(_Request):
    token: str = _SECRET


class EnrollmentPublic(BaseModel):
    client_id: str
    client_name: str
    client_secret: str = Field(
        description="keyauth stores only its hash; the same answer is re-delivered to the "
        "enrollment token until the client's first access token"
    )
    key_epoch: int
    profile: str

    @classmethod
    def of(cls, enrollment: Enrollment) -> EnrollmentPublic:
        return cls(
            client_id=enrollment.client_id,
            client_name=enrollment.client_name,
            client_secret=enrollment.client_secret,
            key_epoch=enrollment.key_epoch,
            profile=enrollment.profile_name,
        )


class TokenRequest(_Request):
    client_id: str = Field(min_length=1, max_length=64)
    client_secret: str = _SECRET


class _BearerTokenPublic(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a password
    expires_in: int


class AccessTokenPublic(_BearerTokenPublic):
    key_epoch: int

    @classmethod
    def of(cls, issued: IssuedToken) -> AccessTokenPublic:
        return cls(
            access_token=issued.token,
            expires_in=issued.lifetime,
            key_epoch=issued.claims.key_epoch,
        )


class AdminTokenPublic(_BearerTokenPublic):
    @classmethod
    def of(cls, issued: IssuedToken) -> AdminTokenPublic:
        return cls(access_token=issued.token, expires_in=issued.lifetime)


class ClientPublic(BaseModel):
    id: str
    name: str
    enrolled_at: datetime
    revoked: bool
    revoked_at: datetime | None
    confirmed: bool = Field(
        description="the client has fetched an access token; until then its enrollment "
        "answer can be re-delivered to its token"
    )

    @classmethod
    def of(cls, client: ClientRecord) -> ClientPublic:
        return cls(
            id=client.client_id,
            name=client.client_name,
            enrolled_at=timestamp_to_datetime(client.enrolled_at),
            revoked=client.revoked,
            confirmed=client.confirmed,
            revoked_at=(
                None if client.revoked_at is None else timestamp_to_datetime(client.revoked_at)
            ),
        )


class RevocationsPublic(BaseModel):
    revoked: list[str] = Field(description="Ids of revoked clients, oldest revocation first")


class KeyEpochPublic(BaseModel):
    key_epoch: int
    profile: str


class KeyIdPublic(BaseModel):
    key_epoch: int
    profile: str
    key_id: str = Field(description="hex SHA-256 of the epoch's secret context, as served")
    statement: str = Field(
        description="an EdDSA JWT of keyauth's token key holding key_epoch, profile and "
        "key_id (purpose 'key-id'; hefl_wire.KeyIdVerifier checks it)"
    )

    @classmethod
    def of(cls, signed: SignedKeyId) -> KeyIdPublic:
        stated = signed.statement
        return cls(
            key_epoch=stated.key_epoch,
            profile=stated.profile,
            key_id=stated.key_id,
            statement=signed.signed,
        )


class HealthPublic(BaseModel):
    status: Literal["ok"] = "ok"
    key_epoch: int


class VerificationKeyPublic(BaseModel):
    algorithm: str
    issuer: str
    audience: str
    public_key_pem: str
    key_epoch: int
    profile: str
