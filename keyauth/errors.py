"""The one exception tree of ``keyauth``.

::

    KeyauthError
    ├── RequestError                    a request keyauth cannot act on (400)
    │   ├── BodyTooLargeError           body beyond ``max_body_bytes`` (413)
    │   └── ExpiryOutOfRangeError       ``expires_in`` outside what the settings allow (422)
    ├── AdminAuthError                  missing or wrong ``X-Admin-Key`` (401)
    │   └── PlaceholderAdminKeyError    placeholder admin key used from off loopback (403)
    ├── EnrollmentTokenError            unknown enrollment token (401)
    │   ├── EnrollmentTokenExpiredError (401)
    │   └── EnrollmentTokenUsedError    already redeemed: single use (403)
    ├── ClientCredentialsError          unknown client id or wrong secret (401)
    ├── ClientRevokedError              the client was revoked (403)
    ├── ClientNotFoundError             no client with that id (404)
    ├── ClientNameTakenError            an active client already has that name (409)
    ├── KeyEpochNotFoundError           no such key epoch (404)
    ├── TokenError                      access token missing, malformed, expired, forged (401)
    │                                   or of the wrong role (403); ``code`` says which
    ├── StateError                      keyauth's own state is unusable (500)
    └── SettingsError                   ``KEYAUTH_*`` settings refused at startup

Every error carries a stable machine-readable ``code`` and the HTTP status the service
answers with (``KeyauthError`` derives from ``hefl_http.errors.ProblemError``, the base
fl_server's tree shares); the app turns them into ``application/problem+json`` in one
handler and
``error_from_problem`` turns such a response back into the matching class. Messages never
contain a secret, a token or key material: they are returned to callers and logged.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hefl_http.errors import ProblemError, bearer_challenge

__all__ = [
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
    "PlaceholderAdminKeyError",
    "RequestError",
    "SettingsError",
    "StateError",
    "TokenError",
    "error_from_problem",
]


class KeyauthError(ProblemError):
    """Base of every error raised by ``keyauth``.

    ``code`` and ``http_status`` come from the class; an instance may override them (an
    error rebuilt from a problem response keeps what the server said).
    """

    code = "keyauth_error"
    http_status = 400
    title = "Key authority error"

    @property
    def challenge(self) -> str | None:
        return 'X-Admin-Key realm="hefl-keyauth"' if self.code.startswith("admin_key") else None


class RequestError(KeyauthError):
    code = "request_invalid"
    http_status = 400
    title = "Invalid request"


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


class TokenError(KeyauthError):
    """An access token that does not authorize the request.

    ``code`` is one of ``token_missing``, ``token_invalid`` (malformed, forged, wrong
    issuer or audience, missing claims), ``token_expired`` and ``token_wrong_role``; the
    last answers 403, the others 401.
    """

    CODES: ClassVar[frozenset[str]] = frozenset(
        {"token_missing", "token_invalid", "token_expired", "token_wrong_role"}
    )
    code = "token_invalid"
    http_status = 401
    title = "Access token not valid"

    def __init__(
        self, detail: str, *, code: str = "token_invalid", http_status: int | None = None
    ) -> None:
        if code not in self.CODES:
            raise ValueError(f"unknown token error code {code!r}")
        default_status = 403 if code == "token_wrong_role" else 401
        super().__init__(detail, code=code, http_status=http_status or default_status)

    @property
    def challenge(self) -> str | None:
        return bearer_challenge(self.code)


class StateError(KeyauthError):
    code = "state_corrupt"
    http_status = 500
    title = "Key authority state unusable"


class SettingsError(KeyauthError):
    code = "settings_invalid"
    http_status = 500
    title = "Key authority settings refused"


def _by_code(cls: type[KeyauthError]) -> dict[str, type[KeyauthError]]:
    found = {cls.code: cls}
    for sub in cls.__subclasses__():
        found.update(_by_code(sub))
    return found


def error_from_problem(status: int, problem: dict[str, Any]) -> KeyauthError:
    """The typed error for an ``application/problem+json`` body keyauth answered with.

    A code keyauth does not define (a proxy's error, a newer server) becomes the base
    ``KeyauthError`` carrying the status and code it was given.
    """
    code = str(problem.get("code") or "http_error")
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    if code in TokenError.CODES:
        return TokenError(detail, code=code, http_status=status)
    cls = _by_code(KeyauthError).get(code, KeyauthError)
    return cls(detail, code=code, http_status=status)
