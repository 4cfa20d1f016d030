"""Problems map back to typed errors by code, then by status."""

from __future__ import annotations

import pytest

import fl_client
from fl_client import errors


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "token_expired", errors.AccessTokenError),
        (403, "token_wrong_role", errors.AccessTokenError),
        (403, "client_revoked", errors.CredentialsError),
        (401, "client_credentials_invalid", errors.CredentialsError),
        (403, "enrollment_token_used", errors.EnrollmentTokenError),
        (409, "too_stale", errors.TooStaleError),
        (409, "version_ahead", errors.VersionAheadError),
        (409, "key_epoch_mismatch", errors.KeyEpochMismatchError),
        (409, "job_not_training", errors.JobNotTrainingError),
        (409, "job_not_started", errors.JobNotStartedError),
        (409, "layout_mismatch", errors.LayoutConflictError),
        (409, "initial_model_exists", errors.InitialModelExistsError),
        (409, "update_id_reused", errors.ConflictError),
        (404, "no_layout", errors.NotFoundError),
        (429, "slots_full", errors.RateLimitedError),
        (422, "block_index_invalid", errors.InvalidRequestError),
        (413, "envelope_too_large", errors.InvalidRequestError),
        (503, "storage_failed", errors.ServerError),
        (502, "", errors.ServerError),
        (403, "admin_key_invalid", errors.AuthError),
        (403, "client_quarantined", errors.ClientQuarantinedError),
        (409, "probe_not_offered", errors.ProbeNotOfferedError),
        (409, "repair_window_exceeded", errors.RepairWindowExceededError),
        (404, "update_not_found", errors.UpdateNotFoundError),
    ],
)
def test_codes_and_statuses_map_to_typed_errors(status: int, code: str, cls: type) -> None:
    error = errors.error_from_problem(status, {"code": code, "detail": "why"} if code else {})
    assert type(error) is cls
    assert error.status == status
    assert error.code == (code or "http_error")
    assert "why" in str(error) or not code


def test_retrain_errors_share_a_base_and_carry_the_current_version() -> None:
    error = errors.error_from_problem(409, {"code": "too_stale", "current_version": 9})
    assert isinstance(error, errors.RetrainError)
    assert isinstance(error, errors.TooStaleError)
    assert error.current_version == 9
    assert error.problem["current_version"] == 9


def test_rate_limited_keeps_retry_after() -> None:
    error = errors.error_from_problem(429, {"code": "rate_limited"}, retry_after=3.0)
    assert isinstance(error, errors.RateLimitedError)
    assert error.retry_after == 3.0


def test_every_error_is_a_client_error_and_the_public_surface_is_complete() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, errors.ClientError), name
    for name in fl_client.__all__:
        assert hasattr(fl_client, name), name
    assert len(set(fl_client.__all__)) == len(fl_client.__all__)
    # every client error is public at the package's top level too
    assert set(errors.__all__) <= set(fl_client.__all__)


def test_no_code_path_unpickles_or_torch_loads_anything() -> None:
    import pathlib

    root = pathlib.Path(fl_client.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        for needle in ("torch.load", "import pickle", "allow_pickle=True", "pickle.load"):
            assert needle not in text, f"{path.name} uses {needle}"
