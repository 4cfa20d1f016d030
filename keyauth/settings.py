"""Key authority configuration, read from ``KEYAUTH_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import crypto
from hefl_wire import is_loopback_host

__all__ = ["PLACEHOLDER_ADMIN_KEYS", "KeyauthSettings"]

# Keys that ship in examples or that anyone would guess first. Only loopback may use them.
PLACEHOLDER_ADMIN_KEYS = frozenset(
    {"change-me", "changeme", "change_me", "admin", "secret", "password", "test", "example"}
)
MIN_ADMIN_KEY_CHARS = 16


class KeyauthSettings(BaseSettings):
    """Settings of the key authority.

    Parameters
    ----------
    host
        The address uvicorn binds to. It must match uvicorn's ``--host``: it decides
        whether the placeholder admin key is acceptable.
    state_dir
        Where the SQLite database, the token-signing key and the CKKS key files live.
    admin_key
        The key administrators present in ``X-Admin-Key``. The placeholder ``change-me``
        (or any key shorter than 16 characters) is refused unless ``host`` is loopback.
    profile
        CKKS profile for newly generated key epochs (existing epochs keep theirs).
    access_token_ttl
        Lifetime of client access tokens in seconds. It bounds how long a revoked client's
        tokens still work at the aggregation server.
    admin_token_ttl
        Lifetime of administrator access tokens in seconds. Nothing revokes one, so this
        is how long a leaked one works; ``hefl-admin`` fetches one per command.
    viewer_token_ttl
        Lifetime of viewer access tokens in seconds: they read fl_server's status (the
        operator page) and nothing else, so they may last a working day.
    enrollment_token_ttl
        Default lifetime of enrollment tokens in seconds.
    enrollment_token_max_ttl
        Longest lifetime an administrator may ask for.
    enrollment_redelivery_window
        Seconds after an enrollment during which the same token gets the same answer
        again (same client id and secret), as long as the client has not yet fetched an
        access token and is not revoked; 0 makes enrollment strictly single-answer.
    max_body_bytes
        Request bodies beyond this are refused with 413 before they are read whole.
    log_level
        Level of keyauth's own log lines (enrollments, revocations, key epochs) when
        started by uvicorn; uvicorn's access log is configured by uvicorn.
    """

    # hide_input_in_errors: a validation error must never print the admin key it rejected.
    model_config = SettingsConfigDict(
        env_prefix="KEYAUTH_", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    state_dir: Path = Path("keyauth-state")
    admin_key: SecretStr = SecretStr("change-me")
    profile: str = crypto.DEFAULT_PROFILE.name
    access_token_ttl: int = Field(default=300, ge=10, le=86_400)
    # Apart from access_token_ttl: raising that for slow hospitals must not lengthen the
    # life of the one credential that creates and stops jobs.
    admin_token_ttl: int = Field(default=300, ge=10, le=3600)
    viewer_token_ttl: int = Field(default=12 * 3600, ge=10, le=7 * 86_400)
    enrollment_token_ttl: int = Field(default=3600, ge=1)
    enrollment_token_max_ttl: int = Field(default=7 * 86_400, ge=1, le=366 * 86_400)
    enrollment_redelivery_window: int = Field(default=600, ge=0, le=86_400)
    max_body_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        try:
            crypto.get_profile(value)
        except crypto.ProfileError as exc:
            # pydantic reports only ValueError as a validation error.
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("admin_key")
    @classmethod
    def _non_empty_admin_key(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("KEYAUTH_ADMIN_KEY must not be empty")
        return value

    @model_validator(mode="after")
    def _no_placeholder_key_off_loopback(self) -> Self:
        if self.enrollment_token_ttl > self.enrollment_token_max_ttl:
            raise ValueError(
                "KEYAUTH_ENROLLMENT_TOKEN_TTL must not exceed KEYAUTH_ENROLLMENT_TOKEN_MAX_TTL"
            )
        if self.admin_key_is_placeholder and not is_loopback_host(self.host):
            # Anyone who can reach the port would be an administrator.
            raise ValueError(
                f"refusing to serve on non-loopback host {self.host!r} with a placeholder "
                f"or short admin key: set KEYAUTH_ADMIN_KEY to a random value of at least "
                f"{MIN_ADMIN_KEY_CHARS} characters"
            )
        return self

    @property
    def admin_key_is_placeholder(self) -> bool:
        key = self.admin_key.get_secret_value()
        return key.strip().lower() in PLACEHOLDER_ADMIN_KEYS or len(key) < MIN_ADMIN_KEY_CHARS

    @property
    def ckks_profile(self) -> crypto.CkksProfile:
        return crypto.get_profile(self.profile)
