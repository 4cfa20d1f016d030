"""The one exception tree of ``keyauth``.

::

    KeyauthError                        keyauth_error (400): the base, never raised itself
    ├── RequestError                    request_invalid (422): a request keyauth cannot act on
    │   ├── ClientNameInvalidError      client_name_invalid (422)
    │   ├── BodyTooLargeError           body beyond ``max_body_bytes`` (413)
    │   └── ExpiryOutOfRangeError       ``expires_in`` outside what the settings allow (422)
    ├── AdminAuthError                  wrong ``X-Admin-Key`` (401)
    │   ├── AdminKeyMissingError        no ``X-Admin-Key`` (401)
    │   └── PlaceholderAdminKeyError    placeholder admin key used from off loopback (403)
    ├── EnrollmentTokenError            unknown enrollment token (401)
    │   ├── EnrollmentTokenExpiredError (401)
    │   └── EnrollmentTokenUsedError    already redeemed: single use (403)
    ├── ClientCredentialsError          unknown client id or wrong secret (401)
    ├── ClientRevokedError              the client was revoked (403)
    ├── ClientNotFoundError             no client with that id (404)
    ├── ClientNameTakenError            an active client already has that name (409)
    ├── KeyEpochNotFoundError           no such key epoch (404)
    ├── NotReadyError                   the app was not started: no lifespan (503)
    ├── StateError                      keyauth's own state is unusable (500)
    └── SettingsError                   ``KEYAUTH_*`` settings refused at startup

    hefl_wire.TokenError                access token missing, malformed, expired, forged
                                        (401) or of the wrong role (403): the contract's
                                        tree, answered by keyauth as it is

Each class declares its stable machine-readable ``code``, the HTTP status hefl_wire's
registry gives it and its title (``KeyauthError`` derives from ``hefl_wire.ProblemError``,
the base fl_server's tree shares); the app turns them into ``application/problem+json``
in one handler. Messages never contain a secret, a token or key material: they are returned to
callers and logged.
"""

from __future__ import annotations

from hefl_wire import (
    ProblemError,
    TokenError,
    TokenExpiredError,
    TokenInvalidError,
    TokenMissingError,
    TokenWrongRoleError,
)

__all__ = [
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
    "NotReadyError",
    "PlaceholderAdminKeyError",
    "RequestError",
    "SettingsError",
    "StateError",
    "TokenError",
    "TokenExpiredError",
    "TokenInvalidError",
    "TokenMissingError",
    "TokenWrongRoleError",
]


class KeyauthError(ProblemError):
    """Base of every error raised by ``keyauth`` (but ``hefl_wire.TokenError``)."""

    code = "keyauth_error"
    http_status = 400
    title = "Key authority error"

    @property
    def challenge(self) -> str | None:
        return 'X-Admin-Key realm="hefl-keyauth"' if self.code.startswith("admin_key") else None


class RequestError(KeyauthError):
    code = "request_invalid"
    http_status = 422
    title = "Invalid request"


class ClientNameInvalidError(RequestError):
    code = "client_name_invalid"
    http_status = 422


class BodyTooLargeError(RequestError):
    code = "body_too_large"
    http_status = 413
    title = "Request body too large"


class ExpiryOutOfRangeError(RequestError):
    code = "expires_in_out_of_range"
    http_status = 422
    title = "Expiry out of range"


class AdminAuthError(KeyauthError):
    code = "admin_key_invalid"
    http_status = 401
    title = "Administrator authentication failed"


class AdminKeyMissingError(AdminAuthError):
    code = "admin_key_missing"
    http_status = 401


class PlaceholderAdminKeyError(AdminAuthError):
    code = "admin_key_placeholder"
    http_status = 403
    title = "Placeholder administrator key refused"


class EnrollmentTokenError(KeyauthError):
    code = "enrollment_token_invalid"
    http_status = 401
    title = "Enrollment token not valid"


class EnrollmentTokenExpiredError(EnrollmentTokenError):
    code = "enrollment_token_expired"
    http_status = 401
    title = "Enrollment token expired"


class EnrollmentTokenUsedError(EnrollmentTokenError):
    code = "enrollment_token_used"
    http_status = 403
    title = "Enrollment token already used"


class ClientCredentialsError(KeyauthError):
    code = "client_credentials_invalid"
    http_status = 401
    title = "Client credentials not valid"


class ClientRevokedError(KeyauthError):
    code = "client_revoked"
    http_status = 403
    title = "Client revoked"


class ClientNotFoundError(KeyauthError):
    code = "client_not_found"
    http_status = 404
    title = "Client not found"


class ClientNameTakenError(KeyauthError):
    code = "client_name_taken"
    http_status = 409
    title = "Client name taken"


class KeyEpochNotFoundError(KeyauthError):
    code = "key_epoch_not_found"
    http_status = 404
    title = "Key epoch not found"


class NotReadyError(KeyauthError):
    code = "not_ready"
    http_status = 503


class StateError(KeyauthError):
    code = "state_corrupt"
    http_status = 500
    title = "Key authority state unusable"


class SettingsError(KeyauthError):
    code = "settings_invalid"
    http_status = 500
    title = "Key authority settings refused"
