"""hefl key authority: CKKS key material, client enrollment and access tokens."""

from keyauth.errors import (
    AdminAuthError,
    BodyTooLargeError,
    ClientCredentialsError,
    ClientNameTakenError,
    ClientNotFoundError,
    ClientRevokedError,
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
    ExpiryOutOfRangeError,
    KeyauthError,
    KeyEpochNotFoundError,
    PlaceholderAdminKeyError,
    RequestError,
    SettingsError,
    StateError,
    TokenError,
    error_from_problem,
)
from keyauth.settings import KeyauthSettings
from keyauth.tokens import AccessClaims, TokenSigner, TokenVerifier

__all__ = [
    "AccessClaims",
    "AdminAuthError",
    "BodyTooLargeError",
    "ClientCredentialsError",
    "ClientNameTakenError",
    "ClientNotFoundError",
    "ClientRevokedError",
    "EnrollmentTokenError",
    "EnrollmentTokenExpiredError",
    "EnrollmentTokenUsedError",
    "ExpiryOutOfRangeError",
    "KeyEpochNotFoundError",
    "KeyauthError",
    "KeyauthSettings",
    "PlaceholderAdminKeyError",
    "RequestError",
    "SettingsError",
    "StateError",
    "TokenError",
    "TokenSigner",
    "TokenVerifier",
    "error_from_problem",
]
