"""The one exception tree of ``fl_server``.

::

    ServerError                       internal_error (500)
    ├── RequestError                  request_invalid (400), encoding_unsupported (415)
    │   ├── BodyTooLargeError         body_too_large (413)
    │   ├── InvalidInputError         a crypto error translated at the edge: envelope_*,
    │   │                             block_index_invalid (422), ciphertext_invalid (422),
    │   │                             layout_invalid (422), ... (code and status copied)
    │   ├── IncompleteModelError      initial_model_incomplete (422)
    │   └── MetricsInvalidError       metrics_invalid (422)
    ├── AuthError                     token_missing / token_invalid / token_expired (401),
    │   │                             token_wrong_role (403)
    │   └── ClientRevokedError        client_revoked (403)
    ├── NotFoundError                 no_layout (404)
    ├── ConflictError                 (409)
    │   ├── JobStateError             job_not_started / job_not_training / initial_model_exists
    │   ├── LayoutConflictError       layout_mismatch
    │   ├── KeyEpochMismatchError     key_epoch_mismatch
    │   ├── UpdateIdReusedError       update_id_reused
    │   └── VersionError              carries ``current_version``
    │       ├── TooStaleError         too_stale
    │       └── VersionAheadError     version_ahead: a base or ``since`` version from the future
    ├── RetryLaterError               carries ``retry_after`` seconds (``Retry-After``)
    │   ├── RateLimitedError          rate_limited (429)
    │   ├── SlotsFullError            slots_full (429)
    │   └── ServerBusyError           server_busy (503)
    ├── StorageError                  storage_failed (503): the write-ahead log could not be
    │                                 written; the server refuses writes until restarted
    └── StartupError                  the server cannot start (never an HTTP answer)
        ├── KeyauthUnavailableError   keyauth_unavailable
        └── StateError                state_invalid: the state directory is unusable

Every error carries a stable machine-readable ``code`` and the HTTP status the service
answers with (``ServerError`` derives from ``hefl_http.errors.ProblemError``, the base
keyauth's tree shares); the app turns them into ``application/problem+json`` in one
handler, with ``extra`` as additional members and ``headers`` as response headers.
Messages never contain a token or ciphertext bytes.
"""

from __future__ import annotations

import math
from typing import Any

import crypto
from hefl_http.errors import ProblemError, bearer_challenge

__all__ = [
    "AuthError",
    "BodyTooLargeError",
    "ClientRevokedError",
    "ConflictError",
    "IncompleteModelError",
    "InvalidInputError",
    "JobStateError",
    "KeyEpochMismatchError",
    "KeyauthUnavailableError",
    "LayoutConflictError",
    "MetricsInvalidError",
    "NotFoundError",
    "RateLimitedError",
    "RequestError",
    "RetryLaterError",
    "ServerBusyError",
    "ServerError",
    "SlotsFullError",
    "StartupError",
    "StateError",
    "StorageError",
    "TooStaleError",
    "UpdateIdReusedError",
    "VersionAheadError",
    "VersionError",
]


class ServerError(ProblemError):
    """Base of every error raised by ``fl_server``.

    ``code`` and ``http_status`` come from the class; an instance may override them
    (a translated crypto or token error keeps the code it was raised with).
    """

    code = "internal_error"
    http_status = 500
    title = "Internal error"

    @property
    def challenge(self) -> str | None:
        # Every 401 of fl_server is about the bearer access token.
        return bearer_challenge(self.code)


class RequestError(ServerError):
    code = "request_invalid"
    http_status = 400
    title = "Invalid request"


class BodyTooLargeError(RequestError):
    code = "body_too_large"
    http_status = 413
    title = "Body too large"


class InvalidInputError(RequestError):
    """A ``crypto`` error about client input, translated once at the edge."""

    title = "Invalid envelope"

    @classmethod
    def from_crypto(cls, exc: crypto.CryptoError) -> InvalidInputError:
        return cls(str(exc), code=exc.code, http_status=exc.http_status)


class IncompleteModelError(RequestError):
    code = "initial_model_incomplete"
    http_status = 422
    title = "Incomplete initial model"


class MetricsInvalidError(RequestError):
    code = "metrics_invalid"
    http_status = 422
    title = "Invalid metrics"


class AuthError(ServerError):
    code = "token_invalid"
    http_status = 401
    title = "Not authenticated"


class ClientRevokedError(AuthError):
    code = "client_revoked"
    http_status = 403
    title = "Client revoked"


class NotFoundError(ServerError):
    code = "not_found"
    http_status = 404
    title = "Not found"


class ConflictError(ServerError):
    code = "conflict"
    http_status = 409
    title = "Conflict"


class JobStateError(ConflictError):
    title = "Not possible in the job's state"


class LayoutConflictError(ConflictError):
    code = "layout_mismatch"
    title = "Layout mismatch"


class KeyEpochMismatchError(ConflictError):
    code = "key_epoch_mismatch"
    title = "Wrong key epoch"

    def __init__(self, detail: str, *, key_epoch: int) -> None:
        super().__init__(detail)
        self.key_epoch = key_epoch

    @property
    def extra(self) -> dict[str, Any]:
        return {"key_epoch": self.key_epoch}


class UpdateIdReusedError(ConflictError):
    code = "update_id_reused"
    title = "Update id reused"


class VersionError(ConflictError):
    def __init__(self, detail: str, *, current_version: int) -> None:
        super().__init__(detail)
        self.current_version = current_version

    @property
    def extra(self) -> dict[str, Any]:
        return {"current_version": self.current_version}


class TooStaleError(VersionError):
    code = "too_stale"
    title = "Update too stale"


class VersionAheadError(VersionError):
    code = "version_ahead"
    title = "Version from the future"


class RetryLaterError(ServerError):
    code = "retry_later"
    http_status = 503
    title = "Retry later"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = max(1, math.ceil(retry_after))

    @property
    def extra(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimitedError(RetryLaterError):
    code = "rate_limited"
    http_status = 429
    title = "Too many updates"


class SlotsFullError(RetryLaterError):
    code = "slots_full"
    http_status = 429
    title = "All training slots taken"


class ServerBusyError(RetryLaterError):
    code = "server_busy"
    http_status = 503
    title = "Server busy"


class StorageError(ServerError):
    code = "storage_failed"
    http_status = 503
    title = "Storage failed"


class StartupError(ServerError):
    code = "startup_failed"
    title = "Server cannot start"


class KeyauthUnavailableError(StartupError):
    code = "keyauth_unavailable"


class StateError(StartupError):
    code = "state_invalid"
