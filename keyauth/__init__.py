"""hefl key authority: CKKS key material, client enrollment and access tokens."""

from hefl_wire import AccessClaims, TokenVerifier
from keyauth.errors import (
    AdminAuthError,
    AdminKeyMissingError,
    BodyTooLargeError,
    ClientCredentialsError,
    ClientNameInvalidError,
    ClientNameTakenError,
    ClientNotFoundError,
    ClientRevokedError,
    EnrollmentTokenError,
    EnrollmentTokenExpiredError,
    EnrollmentTokenUsedError,
    ExpiryOutOfRangeError,
    KeyauthError,
    KeyEpochNotFoundError,
    NotReadyError,
    PlaceholderAdminKeyError,
    RequestError,
    SettingsError,
    StateError,
    TokenError,
)
from keyauth.settings import KeyauthSettings
from keyauth.tokens import TokenSigner

__all__ = [
    "AccessClaims",
    "AdminAuthError",
    "AdminKeyMissingError",
    "BodyTooLargeError",
    "ClientCredentialsError",
    "ClientNameInvalidError",
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
    "NotReadyError",
    "PlaceholderAdminKeyError",
    "RequestError",
    "SettingsError",
    "StateError",
    "TokenError",
    "TokenSigner",
    "TokenVerifier",
]
