"""The one exception tree of ``fl_client``.

::

    ClientError
    ├── ConfigError                   settings or arguments that cannot work
    │   └── InsecureTransportError    plain http:// to a non-loopback host, not allowed
    ├── DataError                     a dataset that cannot be loaded or split
    ├── TrainingError                 the model's outputs are unusable (it diverged)
    ├── PrivacyBudgetSpentError       one more round would exceed this hospital's ε: it stops
    ├── IntegrityError                a decrypted model failed a check: nothing trains on it
    ├── KeyIdMismatchError            the job's key id is not this hospital's secret context's
    ├── LocalStateError               the local state directory is unusable
    │   └── NotEnrolledError          no credential stored yet: run ``hefl-client enroll``
    ├── TransportError                no answer after every retry (connection, timeout)
    ├── ProtocolError                 an answer that breaks docs/protocol.md
    │   └── SpecMismatchError         the job's spec is not the study the job names (hash)
    └── ServiceError                  a service answered with a problem (problem+json)
        ├── AuthError                 401/403
        │   ├── EnrollmentTokenError  enrollment token unknown, expired or already used
        │   ├── CredentialsError      client id/secret refused or the client was revoked
        │   ├── AccessTokenError      access token missing, invalid, expired, wrong role
        │   └── ClientQuarantinedError  this hospital's updates are refused until released
        ├── NotFoundError             404
        │   ├── JobNotFoundError      no such job on the server
        │   └── UpdateNotFoundError   no applied update of that id (a repair)
        ├── ConflictError             409
        │   ├── RetrainError          the update no longer fits the model: re-pull, retrain
        │   │   ├── TooStaleError     base version too old (``current_version``)
        │   │   ├── VersionAheadError base or ``since`` version newer than the server's
        │   │   ├── KeyEpochMismatchError  encrypted under another key epoch than the model
        │   │   └── JobRotatingError  the job moves to a new key epoch: retrain after it
        │   │       └── LeaseRotatingError  … and the lease said so: nothing was trained
        │   ├── JobNotStartedError    no initial model yet
        │   ├── JobNotTrainingError   the job is not accepting updates (done)
        │   ├── JobPausedError        the job is paused: keep the update, resend after resume
        │   ├── JobNotPausedError     resume of a job that is not paused
        │   ├── JobExistsError        another spec holds the job's name
        │   ├── LayoutConflictError   this client's model layout is not the job's
        │   ├── InitialModelExistsError
        │   ├── ProbeNotOfferedError  the server no longer offers that probe of a version
        │   ├── RepairWindowExceededError  the update is older than the repair window
        │   └── RotationNotOfferedError  no re-encryption of the model is asked of this client
        ├── RateLimitedError          429 (``retry_after`` seconds, if the service said)
        ├── InvalidRequestError       any other 4xx
        │   └── SpecInvalidError      a spec the server refuses
        └── ServerError               5xx

``error_from_problem`` turns an ``application/problem+json`` answer into the class its
stable ``code`` names: every code of the wire contract (``hefl_wire.PROBLEMS``) is known,
a code the client acts on has a class of its own, any other gets the class of the status
the contract gives it; a code the contract does not hold (a proxy's answer) falls back on
the HTTP status. Messages never contain a token, a secret or key material: they are
printed and logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hefl_wire import PROBLEMS

__all__ = [
    "AccessTokenError",
    "AuthError",
    "ClientError",
    "ClientQuarantinedError",
    "ConfigError",
    "ConflictError",
    "CredentialsError",
    "DataError",
    "EnrollmentTokenError",
    "InitialModelExistsError",
    "InsecureTransportError",
    "IntegrityError",
    "InvalidRequestError",
    "JobExistsError",
    "JobNotFoundError",
    "JobNotPausedError",
    "JobNotStartedError",
    "JobNotTrainingError",
    "JobPausedError",
    "JobRotatingError",
    "KeyEpochMismatchError",
    "KeyIdMismatchError",
    "LayoutConflictError",
    "LeaseRotatingError",
    "LocalStateError",
    "NotEnrolledError",
    "NotFoundError",
    "PrivacyBudgetSpentError",
    "ProbeNotOfferedError",
    "ProtocolError",
    "RateLimitedError",
    "RepairWindowExceededError",
    "RetrainError",
    "RotationNotOfferedError",
    "ServerError",
    "ServiceError",
    "SpecInvalidError",
    "SpecMismatchError",
    "TooStaleError",
    "TrainingError",
    "TransportError",
    "UpdateNotFoundError",
    "VersionAheadError",
    "error_from_problem",
]


class ClientError(Exception):
    """Base of every error raised by ``fl_client``."""


class ConfigError(ClientError):
    """Settings or command-line arguments that cannot work."""


class InsecureTransportError(ConfigError):
    """Plain http:// to a host that is not loopback, without ``allow_insecure_http``."""


class DataError(ClientError):
    """A dataset that cannot be loaded or split as asked."""


class TrainingError(ClientError):
    """Training or evaluation gave unusable outputs (NaN or infinity: the model diverged)."""


class PrivacyBudgetSpentError(ClientError):
    """One more round would take this hospital beyond the study's ε: it sends nothing more."""


class IntegrityError(ClientError):
    """A decrypted model failed an integrity check (``crypto.check_model``): it is
    corrupted, and nothing is trained, evaluated or exported on it.

    Attributes
    ----------
    job
        The job.
    version
        The model version that failed.
    check
        The first check that failed: ``finite``, ``range`` or ``canary``.
    blocks
        The blocks that failed any check.
    max_abs
        The largest finite magnitude in the model, if any value is finite.
    reported
        Whether the server took the report.
    """

    def __init__(
        self,
        job: str,
        version: int,
        check: str,
        blocks: tuple[int, ...],
        max_abs: float | None,
        *,
        reported: bool = True,
    ) -> None:
        self.job = job
        self.version = version
        self.check = check
        self.blocks = blocks
        self.max_abs = max_abs
        self.reported = reported
        largest = f", largest magnitude {max_abs:.3g}" if max_abs is not None else ""
        told = (
            "was reported to the server, which locates and removes the update that corrupted it"
            if reported
            else "could not be reported to the server (see the warning above)"
        )
        super().__init__(
            f"the model of job {job!r} at version {version} failed its integrity check "
            f"({check} in {describe_blocks(blocks)}{largest}): it is corrupted and {told}; "
            "try again once the job is healthy (hefl-client jobs)"
        )


def describe_blocks(blocks: Sequence[int]) -> str:
    """Blocks as a message names them: ``block 0``, ``blocks 0, 3``, at most eight."""
    shown = ", ".join(str(b) for b in blocks[:8])
    more = f" and {len(blocks) - 8} more" if len(blocks) > 8 else ""
    return f"block{'s' if len(blocks) != 1 else ''} {shown}{more}"


class KeyIdMismatchError(ClientError):
    """The job was created under other keys than the secret context this hospital holds
    for its key epoch, and keyauth serves no context of the job's key id either: keyauth's
    keys were replaced (its state lost) since the job was created."""


class LocalStateError(ClientError):
    """The local state directory is unusable: permissions, corruption, a missing file."""


class NotEnrolledError(LocalStateError):
    """No credential in the state directory."""


class TransportError(ClientError):
    """No answer from a service after every retry."""


class ProtocolError(ClientError):
    """A service answered something docs/protocol.md does not allow."""


class SpecMismatchError(ProtocolError):
    """The spec the server gave is not the study its job names (its SHA-256 differs)."""


class ServiceError(ClientError):
    """A service answered with a problem.

    Attributes
    ----------
    status
        The HTTP status.
    code
        The problem's stable machine-readable code (``"http_error"`` if it had none).
    detail
        The problem's human-readable detail.
    problem
        The whole problem object, with any extra fields (e.g. ``current_version``).
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        code: str = "http_error",
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{detail} [{status} {code}]")
        self.detail = detail
        self.status = status
        self.code = code
        self.problem: dict[str, Any] = dict(problem or {})


class AuthError(ServiceError):
    """401/403: the request was not authorized."""


class EnrollmentTokenError(AuthError):
    """The enrollment token is unknown, expired or was already used: ask for a new one."""


class CredentialsError(AuthError):
    """The stored client credential was refused, or the client was revoked: re-enroll."""


class AccessTokenError(AuthError):
    """The access token was refused (the client fetches a new one once)."""


class ClientQuarantinedError(AuthError):
    """One of this hospital's updates corrupted the job's model and was removed: the
    server refuses its updates to that job until an administrator releases it."""


class NotFoundError(ServiceError):
    """404."""


class ConflictError(ServiceError):
    """409."""


class RetrainError(ConflictError):
    """The update no longer fits the server's model: pull again and retrain."""

    @property
    def current_version(self) -> int | None:
        value = self.problem.get("current_version")
        return value if isinstance(value, int) else None


class TooStaleError(RetrainError):
    """The update's base version is too old; ``current_version`` says the server's."""


class VersionAheadError(RetrainError):
    """A base or ``since`` version the server has not reached (its state was reset?)."""


class KeyEpochMismatchError(RetrainError):
    """The update was encrypted under another key epoch than the model's."""


class JobRotatingError(RetrainError):
    """The job is moving to a new key epoch: an update under the old one is never applied;
    train again on the model of the new epoch."""


class LeaseRotatingError(JobRotatingError):
    """The training lease was refused because the job is moving to a new key epoch:
    nothing was trained (how a client that keeps the job as last read learns of it)."""


class RotationNotOfferedError(ConflictError):
    """The server asks no re-encryption of this client (now): another was asked, or the
    rotation ended."""


class JobNotFoundError(NotFoundError):
    """The server has no job of that name."""


class UpdateNotFoundError(NotFoundError):
    """No applied update of that id in the job (a repair by hand)."""


class ProbeNotOfferedError(ConflictError):
    """The server does not offer that version (or that update) for probing now: the
    search moved on, or the job is not locating a bad update."""


class RepairWindowExceededError(ConflictError):
    """The update is older than the server's repair window: it can no longer be removed."""


class JobPausedError(ConflictError):
    """The job is paused: keep the journaled update and send it again after the resume."""


class JobNotPausedError(ConflictError):
    """Only a paused job can be resumed."""


class JobExistsError(ConflictError):
    """The job's name is held by another spec."""


class JobNotStartedError(ConflictError):
    """The job has no initial model yet."""


class JobNotTrainingError(ConflictError):
    """The job does not accept updates (it is done, or not started)."""


class LayoutConflictError(ConflictError):
    """The job was set up with another model layout than this client's."""


class InitialModelExistsError(ConflictError):
    """Another client put the initial model first."""


class RateLimitedError(ServiceError):
    """429; ``retry_after`` is the delay the service asked for, in seconds."""

    def __init__(
        self,
        detail: str,
        *,
        status: int,
        code: str = "http_error",
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, status=status, code=code, problem=problem)
        self.retry_after = retry_after


class InvalidRequestError(ServiceError):
    """Any other 4xx: the request itself was wrong."""


class SpecInvalidError(InvalidRequestError):
    """The server refused a study spec (its detail has one line per problem)."""


class ServerError(ServiceError):
    """5xx."""


# The codes the client acts on, each with a class of its own.
_ACTED_ON: dict[str, type[ServiceError]] = {
    "enrollment_token_invalid": EnrollmentTokenError,
    "enrollment_token_expired": EnrollmentTokenError,
    "enrollment_token_used": EnrollmentTokenError,
    "client_credentials_invalid": CredentialsError,
    "client_revoked": CredentialsError,
    "token_missing": AccessTokenError,
    "token_invalid": AccessTokenError,
    "token_expired": AccessTokenError,
    "token_wrong_role": AccessTokenError,
    "too_stale": TooStaleError,
    "version_ahead": VersionAheadError,
    "key_epoch_mismatch": KeyEpochMismatchError,
    "job_not_started": JobNotStartedError,
    "job_not_training": JobNotTrainingError,
    "job_not_found": JobNotFoundError,
    "job_paused": JobPausedError,
    "job_not_paused": JobNotPausedError,
    "job_exists": JobExistsError,
    "spec_invalid": SpecInvalidError,
    "layout_mismatch": LayoutConflictError,
    "initial_model_exists": InitialModelExistsError,
    "client_quarantined": ClientQuarantinedError,
    "probe_not_offered": ProbeNotOfferedError,
    "repair_window_exceeded": RepairWindowExceededError,
    "update_not_found": UpdateNotFoundError,
    "job_rotating": JobRotatingError,
    "rotation_not_offered": RotationNotOfferedError,
}


def _by_status(status: int) -> type[ServiceError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitedError
    if status >= 500:
        return ServerError
    return InvalidRequestError


def _class_for(code: str, status: int) -> type[ServiceError]:
    acted_on = _ACTED_ON.get(code)
    if acted_on is not None:
        return acted_on
    known = PROBLEMS.get(code)
    if known is not None and not known.also:
        return _by_status(known.status)
    # Not the contract's (a proxy's answer), or answered with several statuses (no_layout).
    return _by_status(status)


def error_from_problem(
    status: int, problem: Mapping[str, Any], *, retry_after: float | None = None
) -> ServiceError:
    """The typed error for a problem answer.

    Parameters
    ----------
    status
        The HTTP status of the answer.
    problem
        The parsed ``application/problem+json`` body (or ``{}`` if there was none).
    retry_after
        The parsed ``Retry-After`` header, kept on a ``RateLimitedError``.
    """
    code = str(problem.get("code") or "http_error")
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    cls = _class_for(code, status)
    if issubclass(cls, RateLimitedError):
        return cls(detail, status=status, code=code, problem=problem, retry_after=retry_after)
    return cls(detail, status=status, code=code, problem=problem)
