"""The one exception tree of ``fl_server``.

::

    ServerError                       internal_error (500)
    ├── RequestError                  request_invalid (422)
    │   ├── ContentLengthInvalidError content_length_invalid (400)
    │   ├── EncodingUnsupportedError  encoding_unsupported (415)
    │   ├── BodyTooLargeError         body_too_large (413)
    │   ├── InvalidInputError         a crypto error translated at the edge (``from_crypto``):
    │   │   │                         crypto_error (400), or one class per crypto code:
    │   │   ├── ProfileInvalidError             profile_invalid (400)
    │   │   ├── ContextInvalidError             context_invalid (422)
    │   │   ├── LayoutInvalidError              layout_invalid (422)
    │   │   ├── EnvelopeLayoutMismatchError     layout_mismatch (409)
    │   │   ├── ValueOutOfRangeError            value_out_of_range (422)
    │   │   ├── CiphertextInvalidError          ciphertext_invalid (422)
    │   │   ├── EnvelopeMalformedError          envelope_malformed (400)
    │   │   ├── EnvelopeTruncatedError          envelope_truncated (400)
    │   │   ├── EnvelopeTooLargeError           envelope_too_large (413)
    │   │   ├── EnvelopeVersionError            envelope_version_unsupported (400)
    │   │   └── BlockIndexInvalidError          block_index_invalid (422)
    │   ├── IncompleteModelError      initial_model_incomplete (422)
    │   ├── MetricsInvalidError       metrics_invalid (422)
    │   ├── SamplesInvalidError       samples_invalid (422): an X-Hefl-Samples that is not
    │   │                             a whole number of rows in 1..10**9
    │   └── SpecInvalidError          spec_invalid (422), carries every located ``problems``
    ├── AuthError                     token_invalid (401): a ``hefl_wire.TokenError``
    │   │                             translated at the edge (``from_token``)
    │   ├── TokenMissingError         token_missing (401)
    │   ├── TokenExpiredError         token_expired (401)
    │   ├── TokenWrongRoleError       token_wrong_role (403)
    │   └── ClientRevokedError        client_revoked (403)
    ├── ClientQuarantinedError        client_quarantined (403): a repair removed the client's
    │                                 update; its updates are refused until released
    ├── NotFoundError                 not_found (404)
    │   ├── JobNotFoundError          job_not_found (404): no job of that name
    │   ├── LayoutNotFoundError       no_layout (404): GET /v1/jobs/{job}/layout before one is set
    │   ├── UpdateNotFoundError       update_not_found (404): no applied update of that id
    │   └── ClientNotQuarantinedError client_not_quarantined (404): nothing to release
    ├── ConflictError                 conflict (409)
    │   ├── JobStateError             not possible in the job's state
    │   │   ├── NoLayoutError         no_layout
    │   │   ├── JobNotStartedError    job_not_started
    │   │   ├── JobNotTrainingError   job_not_training
    │   │   ├── JobPausedError        job_paused
    │   │   ├── JobNotPausedError     job_not_paused
    │   │   └── InitialModelExistsError  initial_model_exists
    │   ├── JobExistsError            job_exists: the name is taken by another spec
    │   ├── LayoutConflictError       layout_mismatch
    │   ├── KeyEpochMismatchError     key_epoch_mismatch
    │   ├── UpdateIdReusedError       update_id_reused
    │   ├── ProbeNotOfferedError      probe_not_offered: no such integrity probe (for you)
    │   ├── JobRotatingError          job_rotating: the job moves to a new key epoch
    │   ├── RotationRefusedError      rotation_refused: no key rotation possible now
    │   ├── RotationNotOfferedError   rotation_not_offered: no re-encryption asked of you
    │   ├── RepairWindowExceededError repair_window_exceeded: older than FLSERVER_REPAIR_WINDOW
    │   └── VersionError              carries ``current_version``
    │       ├── TooStaleError         too_stale
    │       └── VersionAheadError     version_ahead: a base or ``since`` version from the future
    ├── RetryLaterError               retry_later (503), carries ``retry_after`` seconds
    │   ├── RateLimitedError          rate_limited (429)
    │   ├── SlotsFullError            slots_full (429)
    │   ├── RoundWaitingError         round_waiting (429): the client's update is in the
    │   │                             open round; it waits for the next version
    │   ├── RoundFullError            round_full (429): the open round has its hospitals
    │   ├── ServerBusyError           server_busy (503)
    │   └── KeyauthUnavailableError   keyauth_unavailable (503): no key material from keyauth
    │                                 (at startup the server does not start)
    ├── StorageError                  storage_failed (503): a job's write-ahead log could not
    │   │                             be written; that job refuses writes until restarted
    │   └── ShardError                a shard of a job's model failed or its worker died
    │       └── ShardDiedError        (``fl_server.shards``); likewise until restarted
    └── StartupError                  startup_failed: the server cannot start (never an
        │                             HTTP answer)
        └── StateError                state_invalid: a state directory is unusable (a job
                                      whose directory is damaged answers it for every call)

Each class declares its stable machine-readable ``code``, the HTTP status hefl_wire's
registry gives it and its title (``ServerError`` derives from ``hefl_wire.ProblemError``,
the base keyauth's tree shares); the app turns them into ``application/problem+json`` in
one handler, with ``extra`` as additional members and ``headers`` as response headers.
Messages never contain a token or ciphertext bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import crypto
from hefl_wire import ProblemError, TokenError, bearer_challenge

__all__ = [
    "AuthError",
    "BlockIndexInvalidError",
    "BodyTooLargeError",
    "CiphertextInvalidError",
    "ClientNotQuarantinedError",
    "ClientQuarantinedError",
    "ClientRevokedError",
    "ConflictError",
    "ContentLengthInvalidError",
    "ContextInvalidError",
    "EncodingUnsupportedError",
    "EnvelopeLayoutMismatchError",
    "EnvelopeMalformedError",
    "EnvelopeTooLargeError",
    "EnvelopeTruncatedError",
    "EnvelopeVersionError",
    "IncompleteModelError",
    "InitialModelExistsError",
    "InvalidInputError",
    "JobExistsError",
    "JobNotFoundError",
    "JobNotPausedError",
    "JobNotStartedError",
    "JobNotTrainingError",
    "JobPausedError",
    "JobRotatingError",
    "JobStateError",
    "KeyEpochMismatchError",
    "KeyauthUnavailableError",
    "LayoutConflictError",
    "LayoutInvalidError",
    "LayoutNotFoundError",
    "MetricsInvalidError",
    "NoLayoutError",
    "NotFoundError",
    "ProbeNotOfferedError",
    "ProfileInvalidError",
    "RateLimitedError",
    "RepairWindowExceededError",
    "RequestError",
    "RetryLaterError",
    "RotationNotOfferedError",
    "RotationRefusedError",
    "ServerBusyError",
    "ServerError",
    "SlotsFullError",
    "SpecInvalidError",
    "StartupError",
    "StateError",
    "StorageError",
    "TokenExpiredError",
    "TokenMissingError",
    "TokenWrongRoleError",
    "TooStaleError",
    "UpdateIdReusedError",
    "UpdateNotFoundError",
    "ValueOutOfRangeError",
    "VersionAheadError",
    "VersionError",
]


class ServerError(ProblemError):
    """Base of every error raised by ``fl_server``; ``detail`` never holds a token or
    ciphertext bytes. Each subclass declares its code and status (checked when defined)."""

    code = "internal_error"
    http_status = 500
    title = "Internal error"

    @property
    def challenge(self) -> str | None:
        # Every 401 of fl_server is about the bearer access token.
        return bearer_challenge(self.code)


class RequestError(ServerError):
    code = "request_invalid"
    http_status = 422
    title = "Invalid request"


class ContentLengthInvalidError(RequestError):
    # Unreachable behind uvicorn (h11 refuses such a request first); keyauth answers alike.
    code = "content_length_invalid"
    http_status = 400
    title = "Invalid Content-Length"


class EncodingUnsupportedError(RequestError):
    code = "encoding_unsupported"
    http_status = 415
    title = "Invalid request"


class BodyTooLargeError(RequestError):
    code = "body_too_large"
    http_status = 413
    title = "Body too large"


class InvalidInputError(RequestError):
    """A ``crypto`` error about client input, translated once at the edge."""

    code = "crypto_error"
    http_status = 400
    title = "Invalid envelope"

    @classmethod
    def from_crypto(cls, exc: crypto.CryptoError) -> InvalidInputError:
        """The class for ``exc``'s code, with its message; the registry gives the status."""
        return _BY_CRYPTO_CODE.get(exc.code, InvalidInputError)(str(exc))


class ProfileInvalidError(InvalidInputError):
    code = "profile_invalid"
    http_status = 400


class ContextInvalidError(InvalidInputError):
    code = "context_invalid"
    http_status = 422


class LayoutInvalidError(InvalidInputError):
    code = "layout_invalid"
    http_status = 422


class EnvelopeLayoutMismatchError(InvalidInputError):
    code = "layout_mismatch"
    http_status = 409


class ValueOutOfRangeError(InvalidInputError):
    code = "value_out_of_range"
    http_status = 422


class CiphertextInvalidError(InvalidInputError):
    code = "ciphertext_invalid"
    http_status = 422


class EnvelopeMalformedError(InvalidInputError):
    code = "envelope_malformed"
    http_status = 400


class EnvelopeTruncatedError(InvalidInputError):
    code = "envelope_truncated"
    http_status = 400


class EnvelopeTooLargeError(InvalidInputError):
    code = "envelope_too_large"
    http_status = 413


class EnvelopeVersionError(InvalidInputError):
    code = "envelope_version_unsupported"
    http_status = 400


class BlockIndexInvalidError(InvalidInputError):
    code = "block_index_invalid"
    http_status = 422


# Every subclass of InvalidInputError is the edge's class for one crypto code.
_BY_CRYPTO_CODE = {cls.code: cls for cls in InvalidInputError.__subclasses__()}


class IncompleteModelError(RequestError):
    code = "initial_model_incomplete"
    http_status = 422
    title = "Incomplete initial model"


class MetricsInvalidError(RequestError):
    code = "metrics_invalid"
    http_status = 422
    title = "Invalid metrics"


class SamplesInvalidError(RequestError):
    code = "samples_invalid"
    http_status = 422
    title = "Invalid sample count"


class SpecInvalidError(RequestError):
    """A study spec hefl_study refuses, or one the job cannot take (another profile).

    ``problems`` are ``(location, message)`` pairs; the detail has one line per problem.
    """

    code = "spec_invalid"
    http_status = 422
    title = "Invalid study spec"

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("\n".join(f"{where}: {what}" for where, what in problems))
        self.problems = tuple(problems)

    @property
    def extra(self) -> dict[str, Any]:
        return {"problems": [{"location": w, "message": m} for w, m in self.problems]}


class AuthError(ServerError):
    """A refused access token or client; ``from_token`` translates the verifier's errors."""

    code = "token_invalid"
    http_status = 401
    title = "Not authenticated"

    @classmethod
    def from_token(cls, exc: TokenError) -> AuthError:
        """The class for ``exc``'s code, with its message."""
        return _BY_TOKEN_CODE.get(exc.code, AuthError)(exc.detail)


class TokenMissingError(AuthError):
    code = "token_missing"
    http_status = 401


class TokenExpiredError(AuthError):
    code = "token_expired"
    http_status = 401


class TokenWrongRoleError(AuthError):
    code = "token_wrong_role"
    http_status = 403


_BY_TOKEN_CODE: dict[str, type[AuthError]] = {
    cls.code: cls for cls in (AuthError, TokenMissingError, TokenExpiredError, TokenWrongRoleError)
}


class ClientRevokedError(AuthError):
    code = "client_revoked"
    http_status = 403
    title = "Client revoked"


class ClientQuarantinedError(ServerError):
    code = "client_quarantined"
    http_status = 403
    title = "Client quarantined"


class NotFoundError(ServerError):
    code = "not_found"
    http_status = 404
    title = "Not found"


class JobNotFoundError(NotFoundError):
    code = "job_not_found"
    http_status = 404
    title = "No such job"


class LayoutNotFoundError(NotFoundError):
    code = "no_layout"
    http_status = 404


class UpdateNotFoundError(NotFoundError):
    code = "update_not_found"
    http_status = 404
    title = "No such update"


class ClientNotQuarantinedError(NotFoundError):
    code = "client_not_quarantined"
    http_status = 404
    title = "Client not quarantined"


class ConflictError(ServerError):
    code = "conflict"
    http_status = 409
    title = "Conflict"


class JobStateError(ConflictError):
    title = "Not possible in the job's state"


class NoLayoutError(JobStateError):
    code = "no_layout"
    http_status = 409


class JobNotStartedError(JobStateError):
    code = "job_not_started"
    http_status = 409


class JobNotTrainingError(JobStateError):
    code = "job_not_training"
    http_status = 409


class JobPausedError(JobStateError):
    code = "job_paused"
    http_status = 409


class JobNotPausedError(JobStateError):
    code = "job_not_paused"
    http_status = 409


class InitialModelExistsError(JobStateError):
    code = "initial_model_exists"
    http_status = 409


class JobExistsError(ConflictError):
    code = "job_exists"
    http_status = 409
    title = "Job exists"


class LayoutConflictError(ConflictError):
    code = "layout_mismatch"
    http_status = 409
    title = "Layout mismatch"


class KeyEpochMismatchError(ConflictError):
    code = "key_epoch_mismatch"
    http_status = 409
    title = "Wrong key epoch"

    def __init__(self, detail: str, *, key_epoch: int) -> None:
        super().__init__(detail)
        self.key_epoch = key_epoch

    @property
    def extra(self) -> dict[str, Any]:
        return {"key_epoch": self.key_epoch}


class UpdateIdReusedError(ConflictError):
    code = "update_id_reused"
    http_status = 409
    title = "Update id reused"


class ProbeNotOfferedError(ConflictError):
    code = "probe_not_offered"
    http_status = 409
    title = "Probe not offered"


class JobRotatingError(ConflictError):
    code = "job_rotating"
    http_status = 409
    title = "Key rotation under way"


class RotationRefusedError(ConflictError):
    code = "rotation_refused"
    http_status = 409
    title = "Rotation refused"


class RotationNotOfferedError(ConflictError):
    code = "rotation_not_offered"
    http_status = 409
    title = "Rotation not offered"


class RepairWindowExceededError(ConflictError):
    code = "repair_window_exceeded"
    http_status = 409
    title = "Beyond the repair window"


class VersionError(ConflictError):
    def __init__(self, detail: str, *, current_version: int) -> None:
        super().__init__(detail)
        self.current_version = current_version

    @property
    def extra(self) -> dict[str, Any]:
        return {"current_version": self.current_version}


class TooStaleError(VersionError):
    code = "too_stale"
    http_status = 409
    title = "Update too stale"


class VersionAheadError(VersionError):
    code = "version_ahead"
    http_status = 409
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


class RoundWaitingError(RetryLaterError):
    code = "round_waiting"
    http_status = 429
    title = "Waiting for the round to close"


class RoundFullError(RetryLaterError):
    code = "round_full"
    http_status = 429
    title = "The round has its hospitals"


class ServerBusyError(RetryLaterError):
    code = "server_busy"
    http_status = 503
    title = "Server busy"


class KeyauthUnavailableError(RetryLaterError):
    code = "keyauth_unavailable"
    http_status = 503
    title = "Key authority unavailable"


class StorageError(ServerError):
    code = "storage_failed"
    http_status = 503
    title = "Storage failed"


class StartupError(ServerError):
    code = "startup_failed"
    http_status = 500
    title = "Server cannot start"


class StateError(StartupError):
    code = "state_invalid"
    http_status = 500
