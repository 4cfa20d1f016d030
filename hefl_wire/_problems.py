"""The registry of every problem code keyauth and fl_server answer, with its HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["PROBLEMS", "Problem", "ProblemCodeError", "check_problem"]


class ProblemCodeError(ValueError):
    """A problem code the registry does not hold, or a status it does not give that code."""


@dataclass(frozen=True)
class Problem:
    """One problem code of the wire contract.

    Attributes
    ----------
    code
        The stable machine-readable ``code`` member of the problem.
    status
        The HTTP status it is answered with.
    meaning
        One line: when a service answers it.
    also
        Other statuses the same code is answered with (``no_layout``: 404 from a GET,
        409 from an action that needs the layout). Kept because the wire is frozen.
    """

    code: str
    status: int
    meaning: str
    also: frozenset[int] = frozenset()

    @property
    def statuses(self) -> frozenset[int]:
        """Every status this code may be answered with."""
        return self.also | {self.status}


_CODES = (
    # The HTTP edge both services share (hefl_http.problems).
    Problem("request_invalid", 422, "a parameter or body field is missing, unknown or invalid"),
    Problem("http_400", 400, "a body the web framework could not parse (JSON not in UTF-8)"),
    Problem("not_found", 404, "no such path, or no such resource"),
    Problem("method_not_allowed", 405, "the path does not take this method"),
    Problem("content_length_invalid", 400, "Content-Length is not a byte count"),
    Problem("body_too_large", 413, "the body is larger than the service accepts"),
    Problem("internal_error", 500, "an unexpected error; the detail says no more"),
    # Access tokens (hefl_wire.TokenVerifier), refused alike by both services.
    Problem("token_missing", 401, "no access token was presented"),
    Problem("token_invalid", 401, "the access token is malformed, forged or lacks a claim"),
    Problem("token_expired", 401, "the access token has expired"),
    Problem("token_wrong_role", 403, "the access token's role is not one the route takes"),
    Problem("client_revoked", 403, "the client was revoked"),
    # keyauth.
    Problem("keyauth_error", 400, "the base of keyauth's tree: no raise site answers it"),
    Problem("body_malformed", 400, "the body is not JSON"),
    Problem("unsupported_media_type", 415, "the body is not sent as application/json"),
    Problem("client_name_invalid", 422, "client_name does not match its pattern"),
    Problem("expires_in_out_of_range", 422, "expires_in beyond what the settings allow"),
    Problem("admin_key_missing", 401, "no X-Admin-Key header"),
    Problem("admin_key_invalid", 401, "a wrong X-Admin-Key"),
    Problem("admin_key_placeholder", 403, "the placeholder admin key, from off loopback"),
    Problem("enrollment_token_invalid", 401, "an unknown enrollment token"),
    Problem("enrollment_token_expired", 401, "an expired enrollment token"),
    Problem("enrollment_token_used", 403, "a redeemed enrollment token, past re-delivery"),
    Problem("client_credentials_invalid", 401, "an unknown client id or a wrong secret"),
    Problem("client_not_found", 404, "no client with that id"),
    Problem("client_name_taken", 409, "an active client already has that name"),
    Problem("key_epoch_not_found", 404, "no such key epoch"),
    Problem("not_ready", 503, "the key authority is not started (no lifespan)"),
    Problem("state_corrupt", 500, "keyauth's state directory is unusable"),
    Problem(
        "settings_invalid", 500, "KEYAUTH_* settings refused (at startup: never an HTTP answer)"
    ),
    # fl_server.
    Problem("encoding_unsupported", 415, "a Content-Encoding other than identity"),
    Problem("initial_model_incomplete", 422, "an initial model not at version 0 or not whole"),
    Problem("metrics_invalid", 422, "a metrics report that breaks its schema"),
    Problem("samples_invalid", 422, "an X-Hefl-Samples header that is not 1..10**9 rows"),
    Problem("conflict", 409, "the base of fl_server's conflicts: no raise site answers it"),
    Problem(
        "no_layout",
        409,
        "the job has no layout yet (404 from GET /v1/jobs/{job}/layout)",
        frozenset({404}),
    ),
    Problem("job_not_found", 404, "no job of that name"),
    Problem("job_exists", 409, "a job of that name exists, with another spec"),
    Problem("spec_invalid", 422, "a study spec refused, or not of the key epoch's profile"),
    Problem("job_paused", 409, "the job is paused: send the update again once it resumes"),
    Problem("job_not_paused", 409, "the job is not paused, so it cannot resume"),
    Problem("job_not_started", 409, "the job has no initial model yet"),
    Problem("job_not_training", 409, "the job accepts no more updates (done)"),
    Problem("initial_model_exists", 409, "the job has its initial model already"),
    Problem("key_epoch_mismatch", 409, "encrypted under another key epoch (with key_epoch)"),
    Problem("update_id_reused", 409, "the update id was used for another update"),
    Problem("too_stale", 409, "the base version is too old (with current_version)"),
    Problem("version_ahead", 409, "a version the model has not reached (with current_version)"),
    Problem(
        "retry_later", 503, "the base of fl_server's retry-later errors: no raise site answers it"
    ),
    Problem("rate_limited", 429, "this client sends updates too fast (with Retry-After)"),
    Problem("slots_full", 429, "every training slot is taken (with Retry-After)"),
    Problem("round_waiting", 429, "the client's update is in the open round (with Retry-After)"),
    Problem("round_full", 429, "the open round has its hospitals (with Retry-After)"),
    Problem("server_busy", 503, "updates are queued, or the server is starting (with Retry-After)"),
    Problem("storage_failed", 503, "the log could not be written; writes stop until restart"),
    Problem("startup_failed", 500, "the server cannot start (at startup: never an HTTP answer)"),
    Problem(
        "keyauth_unavailable",
        503,
        "keyauth gave no key material (at startup, or as a job is created)",
    ),
    Problem("state_invalid", 500, "the server's or a job's state directory is unusable"),
    Problem(
        "client_quarantined", 403, "a repair removed this client's update: refused until released"
    ),
    Problem("probe_not_offered", 409, "no such integrity probe is offered (to this client)"),
    Problem("repair_window_exceeded", 409, "the update is older than the repair window"),
    Problem("update_not_found", 404, "no applied update of that id"),
    Problem(
        "job_rotating",
        409,
        "the job is moving to a new key epoch: fetch it and train again once it has",
    ),
    Problem("rotation_refused", 409, "the job cannot move to a new key epoch now (detail: why)"),
    Problem("rotation_not_offered", 409, "no re-encryption of the model is asked of this client"),
    Problem("client_not_quarantined", 404, "the client is not quarantined in that job"),
    # Input errors of crypto, answered by fl_server (fl_server.errors.InvalidInputError).
    Problem("crypto_error", 400, "a crypto error with no finer code (crypto raises none today)"),
    Problem("profile_invalid", 400, "an invalid CKKS parameter set"),
    Problem("context_invalid", 422, "context bytes that cannot be used"),
    Problem("layout_invalid", 422, "a model layout that cannot be used"),
    Problem("layout_mismatch", 409, "a model layout other than the job's"),
    Problem("value_out_of_range", 422, "a value beyond what the profile holds safely"),
    Problem("ciphertext_invalid", 422, "ciphertext bytes invalid for this context"),
    Problem("envelope_malformed", 400, "a malformed envelope"),
    Problem("envelope_truncated", 400, "an envelope cut short"),
    Problem("envelope_too_large", 413, "an envelope larger than the layout allows"),
    Problem("envelope_version_unsupported", 400, "an envelope format version not known"),
    Problem("block_index_invalid", 422, "block indices duplicated, unordered or out of range"),
)

PROBLEMS: Mapping[str, Problem] = MappingProxyType({p.code: p for p in _CODES})
if len(PROBLEMS) != len(_CODES):
    raise ProblemCodeError("a problem code is registered twice")


def check_problem(code: str, status: int, *, where: str) -> Problem:
    """The registry's entry for ``code``, if it may be answered with ``status``.

    Raises
    ------
    ProblemCodeError
        ``code`` is not registered, or the registry gives it another status; ``where``
        (an error class's name) says who asked.
    """
    problem = PROBLEMS.get(code)
    if problem is None:
        raise ProblemCodeError(f"{where}: problem code {code!r} is not in hefl_wire's registry")
    if status not in problem.statuses:
        allowed = " or ".join(str(s) for s in sorted(problem.statuses))
        raise ProblemCodeError(f"{where}: {code!r} is answered with {allowed}, not {status}")
    return problem
