"""Every decrypted model checked before it is used; what a check found, reported to the job."""

# The checks are crypto.check_model's (finite, range, canary). A model that passes is used
# and, once trained on, vouched for by the metrics report of its version (no request of
# its own); a model that fails is reported here and never trained, evaluated or exported.

from __future__ import annotations

import numpy.typing as npt

from crypto import CkksProfile, IntegrityCheck, ModelLayout, check_model
from fl_client.errors import AuthError, IntegrityError, ServiceError, TransportError
from fl_client.events import ClientWarning, IntegrityFailed
from fl_client.rounds.context import RoundContext
from fl_client.rounds.port import IntegrityReport

__all__ = ["report_of", "require_intact", "send_report"]


def report_of(
    version: int, result: IntegrityCheck, update_id: str | None = None
) -> IntegrityReport:
    """The report of ``result`` for ``version`` (``update_id``: the probe it answers)."""
    return IntegrityReport(
        version=version,
        ok=result.ok,
        check=result.check,
        blocks=result.blocks,
        update_id=update_id,
    )


def send_report(ctx: RoundContext, report: IntegrityReport) -> bool:
    """Post a report; ``False`` (and a warning) if it could not be sent, except a refused
    login, which is raised (a quarantined or revoked hospital stops)."""
    try:
        ctx.server.post_integrity(report)
    except (ServiceError, TransportError) as exc:
        if isinstance(exc, AuthError):
            raise
        ctx.events.emit(
            ClientWarning(f"integrity report of version {report.version} not sent: {exc}")
        )
        return False
    return True


def require_intact(
    ctx: RoundContext,
    job: str,
    layout: ModelLayout,
    profile: CkksProfile,
    version: int,
    blocks: npt.ArrayLike,
) -> None:
    """Check a decrypted model; if it fails, say so, report it and raise.

    Raises
    ------
    IntegrityError
        The model failed a check (``reported`` says whether the server took the report).
    """
    result = check_model(layout, profile, blocks)
    if result.ok:
        return
    assert result.check is not None
    reported = send_report(ctx, report_of(version, result))
    ctx.events.emit(
        IntegrityFailed(
            job=job,
            version=version,
            check=result.check,
            blocks=list(result.blocks),
            max_abs=result.max_abs,
            reported=reported,
        )
    )
    raise IntegrityError(
        job, version, result.check, result.blocks, result.max_abs, reported=reported
    )
