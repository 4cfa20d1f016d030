"""A job's integrity: clients' checks, the search for the first bad version, repairs, quarantine.

Clients report the checks of the models they decrypt (``fl_server.checks``); a bad one
starts a search (``fl_server.locate``) that offers probe models (``fl_server.probes``)
and ends in a repair: a record in the write-ahead log that subtracts each removed
update at the weight it was applied at (``ModelState.repair``), replayed after kill -9.
Everything that touches the model runs on the job's apply worker; the search itself is
derived from the durable reports, so a restart picks it up where it was.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from fl_server.checks import CheckBook, IntegrityReport, report_to_json
from fl_server.domain import (
    IntegrityState,
    IntegrityStatus,
    IntegrityView,
    ModelDownload,
    ProbeOutcome,
    ProbeRecordView,
    ProbeView,
    QuarantineView,
    RemovedUpdateView,
    RepairView,
)
from fl_server.errors import (
    ClientNotQuarantinedError,
    ClientQuarantinedError,
    ProbeNotOfferedError,
    RepairWindowExceededError,
    RequestError,
    ServerError,
    StateError,
    StorageError,
    UpdateNotFoundError,
    VersionAheadError,
)
from fl_server.history import UpdateHistory
from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.locate import (
    Evidence,
    Healthy,
    ProbeUpdate,
    ProbeVersion,
    RemoveUpdates,
    Stuck,
    plan,
)
from fl_server.parsing import client_input, validation_detail
from fl_server.probes import ProbeModel, build_probe_model, needed_seqs
from fl_server.recovery import stage_logged
from fl_server.repairs import RepairSummary
from fl_server.schemas import RepairCreate
from fl_server.settings import ServerSettings
from fl_server.state import ModelState
from fl_server.store import ReleaseRecord, RemovedUpdate, RepairRecord, Store, UpdateRecord
from fl_server.traffic import Traffic
from fl_server.worker import ApplyWorker
from hefl_wire import AccessClaims

__all__ = ["JobIntegrity", "parse_repair_request", "repair_view"]

logger = logging.getLogger("fl_server")

_PROBES_KEPT = 50


@dataclass
class _Offered:
    """The probe on offer: its model, when it began, and (for an update) its deadline."""

    model: ProbeModel
    started_at: float
    deadline: float | None
    record: ProbeRecordView


class JobIntegrity:
    """One job's integrity machinery (docs/design.md, "Integrity").

    Parameters
    ----------
    settings
        ``repair_window`` and ``probe_timeout``.
    lifecycle
        The job and its live model.
    store, journal, worker, traffic, clock
        The job's durable state, the thread that writes it, the thread that changes the
        model, the byte counters, seconds since the epoch.
    """

    def __init__(
        self,
        settings: ServerSettings,
        lifecycle: JobLifecycle,
        *,
        store: Store,
        journal: Journal,
        worker: ApplyWorker,
        traffic: Traffic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._store = store
        self._journal = journal
        self._worker = worker
        self._traffic = traffic
        self._clock = clock
        self._checks = CheckBook()
        self._timed_out: set[uuid.UUID] = set()
        self._lock = threading.Lock()
        self._label = IntegrityState.HEALTHY
        self._detail: str | None = None
        self._bounds: tuple[int | None, int | None] = (None, None)
        self._offered: _Offered | None = None
        self._probes: deque[ProbeRecordView] = deque(maxlen=_PROBES_KEPT)

    @property
    def _name(self) -> str:
        return self._lifecycle.record.name

    # -- on the worker ----------------------------------------------------------------------

    def load(self, good_versions: Iterable[int]) -> None:
        """At startup, after recovery: the stored reports, and the versions metrics name."""
        state = self._lifecycle.state
        sender_of = {r.update_id: r.client_id for r in state.history} if state else {}
        for raw in self._store.load_integrity():
            self._checks.add(raw, sender_of=sender_of)
        for version in good_versions:
            self._checks.saw_good(version)
        self.step()

    def step(self) -> None:
        """Take the next step of the search (after any news: a report, an update, a tick)."""
        state = self._lifecycle.state
        if state is None or self._lifecycle.failure is not None:
            return
        next_step = plan(self._evidence(state), state.history.made)
        if isinstance(next_step, Healthy):
            self._settle(IntegrityState.HEALTHY, None, (None, None))
        elif isinstance(next_step, Stuck):
            if self._detail != next_step.detail:
                logger.error(
                    "job %s: cannot locate the bad update: %s", self._name, next_step.detail
                )
            self._settle(IntegrityState.LOCATING, next_step.detail, (next_step.lo, next_step.hi))
        elif isinstance(next_step, RemoveUpdates):
            self._remove_located(state, next_step)
        else:
            self._offer(state, next_step)

    def tick(self) -> None:
        """An update probe past its deadline: its sender did not answer."""
        offered = self._offered
        if offered is None or offered.deadline is None or self._clock() < offered.deadline:
            return
        probe = offered.model.probe
        assert probe.update_id is not None
        self._timed_out.add(uuid.UUID(probe.update_id))
        self._end_probe(ProbeOutcome.TIMEOUT)
        logger.warning(
            "job %s: client %s did not check its update %s within %g s: the update goes as a "
            "suspect, its sender is not quarantined",
            self._name,
            probe.client_id,
            probe.update_id,
            self._settings.probe_timeout,
        )
        self.step()

    def after_apply(self) -> None:
        """An update was applied: the window moved (only a search cares)."""
        if self._label is not IntegrityState.HEALTHY:
            self.step()

    def saw_metrics(self, version: int) -> None:
        """A metrics report on ``version``: its client checked it good and trained on it."""
        self._checks.saw_good(version)
        self._answer_version_probe(version, ok=True)
        if self._label is not IntegrityState.HEALTHY:
            self.step()

    def receive(self, client: AccessClaims, report: IntegrityReport) -> IntegrityState:
        """Keep ``client``'s report durably, then move the search; the state after it.

        Raises
        ------
        VersionAheadError
            The version is ahead of the model.
        ProbeNotOfferedError
            An answer about an update that was not offered to this client.
        """
        state = self._lifecycle.require_started()
        if report.version > state.version:
            raise VersionAheadError(
                f"integrity report on version {report.version}, but the model is at version "
                f"{state.version}",
                current_version=state.version,
            )
        senders: dict[uuid.UUID, str] = {}
        if report.update_id is not None:
            record = state.history.get(report.update_id)
            if record is None or record.client_id != client.client_id:
                raise ProbeNotOfferedError(
                    f"update {report.update_id} was not offered to this client for a check"
                )
            senders[record.update_id] = record.client_id
        raw = report_to_json(report, client.client_id, client.client_name, self._clock())
        self._journal.call(lambda: self._store.append_integrity(raw)).result()
        self._checks.add(raw, sender_of=senders)
        self._log_report(client, report)
        if report.update_id is not None:
            offered = self._offered
            if offered is not None and offered.model.probe.update_id == str(report.update_id):
                self._end_probe(ProbeOutcome.OK if report.ok else ProbeOutcome.BAD)
        else:
            self._answer_version_probe(report.version, ok=report.ok)
        self.step()
        return self._label

    def repair(self, update_ids: Sequence[uuid.UUID], *, quarantine: bool) -> RepairView:
        """The administrator removes ``update_ids`` (and quarantines their senders).

        Raises
        ------
        UpdateNotFoundError
            An id the job holds no applied update of (or one removed already).
        RepairWindowExceededError
            An update older than the repair window.
        """
        state = self._lifecycle.require_started()
        removed = state.book().removed
        records: list[UpdateRecord] = []
        for update_id in dict.fromkeys(update_ids):
            if update_id in removed:
                raise UpdateNotFoundError(
                    f"update {update_id} was removed already (version "
                    f"{removed[update_id].version}); nothing to remove"
                )
            record = state.history.get(update_id)
            if record is None:
                if state.receipt(update_id) is not None:
                    floor = state.history.floor(state.version)
                    raise RepairWindowExceededError(
                        f"update {update_id} is older than the repair window: only updates of "
                        f"versions after {floor} can be removed (FLSERVER_REPAIR_WINDOW="
                        f"{self._settings.repair_window}, the model is at version "
                        f"{state.version})"
                    )
                raise UpdateNotFoundError(f"job {self._name} holds no applied update {update_id}")
            records.append(record)
        culprits = tuple(records) if quarantine else ()
        summary = self._remove(
            state, tuple(records), culprits, "removed by the administrator", None
        )
        self.step()
        return repair_view(summary)

    def release(self, client_id: str) -> None:
        """The administrator lets ``client_id`` send updates to the job again."""
        state = self._lifecycle.require_started()
        if not state.is_quarantined(client_id):
            shown = client_id if len(client_id) <= 64 else f"{client_id[:64]}…"
            raise ClientNotQuarantinedError(
                f"client {shown} is not quarantined in job {self._name}: nothing to release "
                "(give its client id: the status's integrity.quarantined lists them, "
                "hefl-admin job show prints them)"
            )
        record = ReleaseRecord(
            entry=state.entries + 1, after_seq=state.seq, client_id=client_id, at=self._clock()
        )
        self._journal.append(record).result()
        state.release(record)
        logger.warning("job %s: client %s released from quarantine", self._name, client_id)

    # -- any thread -------------------------------------------------------------------------

    def view(self) -> IntegrityView:
        with self._lock:
            offered = self._offered
            return IntegrityView(self._label, offered.model.probe if offered else None)

    def require_not_quarantined(self, client: AccessClaims) -> None:
        state = self._lifecycle.state
        if state is not None and state.is_quarantined(client.client_id):
            raise ClientQuarantinedError(
                f"client {client.client_name or client.client_id} is quarantined in job "
                f"{self._name}: a repair removed its update; its updates are refused until "
                "an administrator releases it (hefl-admin job release)"
            )

    def download(
        self, client: AccessClaims, version: int, update_id: uuid.UUID | None
    ) -> ModelDownload:
        """The model of the probe on offer, if it is this one and offered to ``client``."""
        with self._lock:
            offered = self._offered
        asked = f"version {version}" + (f" plus update {update_id}" if update_id else "")
        probe = offered.model.probe if offered is not None else None
        wanted = None if update_id is None else str(update_id)
        if probe is None or (probe.version, probe.update_id) != (version, wanted):
            on_offer = "no probe" if probe is None else _describe(probe)
            raise ProbeNotOfferedError(
                f"{asked} is not offered ({on_offer} is); GET .../model without version= "
                "serves the model"
            )
        if probe.client_id is not None and probe.client_id != client.client_id:
            raise ProbeNotOfferedError(f"{asked} is offered to the sender of that update only")
        assert offered is not None
        body = offered.model.body
        self._traffic.count_out(len(body))
        return ModelDownload(offered.model.etag, version, body)

    def status(self) -> IntegrityStatus:
        state = self._lifecycle.state
        book = state.book() if state is not None else None
        with self._lock:
            label, detail, (good, bad) = self._label, self._detail, self._bounds
            offered = self._offered
            probes = tuple(self._probes) + ((offered.record,) if offered else ())
        return IntegrityStatus(
            state=label,
            probe=offered.model.probe if offered else None,
            detail=detail,
            good=good,
            bad=bad,
            reports=self._checks.recent(),
            probes=probes,
            repairs=tuple(repair_view(r) for r in book.repairs) if book else (),
            quarantined=tuple(
                QuarantineView(q.client_id, q.client_name, q.since, q.entry)
                for q in book.quarantined.values()
            )
            if book
            else (),
            reports_total=self._checks.total,
            updates_removed=len(book.removed) if book else 0,
        )

    # -- the search ---------------------------------------------------------------------------

    def _evidence(self, state: ModelState) -> Evidence:
        floor = state.history.floor(state.version)
        since = state.last_repair_version
        self._checks.forget(good_below=max(floor, since), bad_below=since)
        return Evidence(
            version=state.version,
            floor=floor,
            window=state.history.window,
            since=since,
            good=frozenset(self._checks.good),
            bad=dict(self._checks.bad),
            answers=dict(self._checks.answers),
            timed_out=frozenset(self._timed_out),
            removed=frozenset(state.book().removed),
        )

    def _settle(
        self,
        label: IntegrityState,
        detail: str | None,
        bounds: tuple[int | None, int | None],
        offered: _Offered | None = None,
    ) -> None:
        if offered is None and self._offered is not None:
            self._end_probe(ProbeOutcome.WITHDRAWN)
        with self._lock:
            self._label, self._detail, self._bounds = label, detail, bounds
            if offered is not None:
                self._offered = offered

    def _offer(self, state: ModelState, step: ProbeVersion | ProbeUpdate) -> None:
        if isinstance(step, ProbeVersion):
            probe = ProbeView(step.version)
            lo, hi = step.lo, step.hi
            known = f"version {lo} checked good" if lo is not None else "none checked good yet"
            detail = (
                f"locating: version {hi} reported bad ({self._checks.bad.get(hi)}); {known}; "
                f"probing version {step.version}"
            )
            deadline = None
        else:
            update = step.update
            probe = ProbeView(step.lo, str(update.update_id), update.client_id)
            lo, hi = step.lo, step.hi
            detail = (
                f"locating: version {hi} is the first bad version; asking "
                f"{update.client_name or update.client_id}, the sender of update "
                f"{update.update_id}, to check version {lo} plus its own update"
            )
            deadline = self._clock() + self._settings.probe_timeout
        current = self._offered
        if current is not None and current.model.probe == probe:
            with self._lock:
                self._label, self._detail, self._bounds = IntegrityState.LOCATING, detail, (lo, hi)
            return
        if current is not None:
            self._end_probe(ProbeOutcome.WITHDRAWN)
        try:
            model = self._build(state, probe)
        except ServerError as exc:
            logger.error("job %s: the probe model could not be built: %s", self._name, exc)
            self._settle(
                IntegrityState.LOCATING,
                f"{detail}: the probe model could not be built ({exc})",
                (lo, hi),
            )
            return
        now = self._clock()
        record = ProbeRecordView(probe, now, ProbeOutcome.PENDING, None)
        logger.warning("job %s: %s", self._name, detail)
        self._settle(
            IntegrityState.LOCATING, detail, (lo, hi), _Offered(model, now, deadline, record)
        )

    def _build(self, state: ModelState, probe: ProbeView) -> ProbeModel:
        limits = self._lifecycle.limits
        assert limits is not None
        removed = list(state.book().removed)
        envelopes = self._read_envelopes(needed_seqs(state, probe, removed))
        return build_probe_model(state, limits, probe, envelopes, removed)

    def _answer_version_probe(self, version: int, *, ok: bool) -> None:
        offered = self._offered
        if offered is None:
            return
        probe = offered.model.probe
        if probe.update_id is None and probe.version == version:
            self._end_probe(ProbeOutcome.OK if ok else ProbeOutcome.BAD)

    def _end_probe(self, outcome: ProbeOutcome) -> None:
        """The probe on offer ended: answered, timed out, or no longer needed (withdrawn)."""
        with self._lock:
            offered, self._offered = self._offered, None
            if offered is not None:
                self._probes.append(
                    ProbeRecordView(
                        offered.record.probe, offered.started_at, outcome, self._clock()
                    )
                )

    # -- repairs ------------------------------------------------------------------------------

    def _remove_located(self, state: ModelState, step: RemoveUpdates) -> None:
        check = self._checks.bad.get(step.hi, "a check")
        parts = [f"version {step.hi} failed its {check} check, version {step.lo} checked good"]
        if len(state.history.made(step.hi)) > 1:
            if step.culprits:
                names = ", ".join(_who(r) for r in step.culprits)
                parts.append(f"its sender found it bad on version {step.lo}: {names}")
            if step.unanswered:
                names = ", ".join(_who(r) for r in step.unanswered)
                parts.append(
                    f"no answer within {self._settings.probe_timeout:g} s from {names}: "
                    "removed as suspects, not quarantined"
                )
            if not step.culprits and not step.unanswered:
                parts.append("each sender found its own update good: all removed, none quarantined")
        try:
            self._remove(state, step.remove, step.culprits, "; ".join(parts), step.hi)
        except ServerError as exc:
            logger.error("job %s: the repair failed: %s", self._name, exc)
            self._settle(IntegrityState.LOCATING, f"the repair failed: {exc}", (step.lo, step.hi))
            return
        self.step()

    def _remove(
        self,
        state: ModelState,
        remove: tuple[UpdateRecord, ...],
        culprits: tuple[UpdateRecord, ...],
        reason: str,
        first_bad: int | None,
    ) -> RepairSummary:
        """Log a repair removing ``remove``, then apply it; quarantine ``culprits``' senders.

        A quarantined sender's other updates from the first of its removed ones on (applied
        since, or still in the buffer) go too, in the same record: the repaired model holds
        nothing of it since then, and a second bad update cannot outlive the repair.
        """
        self._lifecycle.require_writable()
        limits = self._lifecycle.limits
        assert limits is not None
        also = _later_updates_of(state.history, remove, culprits, state.book().removed)
        if also:
            names = ", ".join(f"{_who(r)}, version {r.version}" for r in also)
            reason = f"{reason}; also removed, from the quarantined sender since: {names}"
            remove += also
        label = self._label
        with self._lock:
            self._label = IntegrityState.REPAIRING
        try:
            envelopes = self._read_envelopes({r.seq for r in remove})
            blocks = [stage_logged(state, envelopes[r.seq], limits) for r in remove]
        except ServerError:
            with self._lock:
                self._label = label
            raise
        record = RepairRecord(
            entry=state.entries + 1,
            after_seq=state.seq,
            version=state.version + (2 if state.buffered else 1),
            removed=tuple(RemovedUpdate.of(r) for r in remove),
            quarantine={r.client_id: r.client_name for r in culprits},
            reason=reason,
            at=self._clock(),
            first_bad_version=first_bad,
            envelopes=tuple(envelopes[r.seq] for r in remove),
        )
        # Durable before it is applied: a kill -9 from here on replays it from the log.
        self._journal.append(record).result()
        try:
            summary = state.repair(record, blocks)
        except Exception:
            logger.exception("job %s: applying repair %d failed", self._name, record.entry)
            failure = StorageError("a repair could not be applied")
            self._lifecycle.fail(failure)
            raise failure from None
        self._timed_out.clear()
        self._end_probe(ProbeOutcome.WITHDRAWN)
        for removed in record.removed:
            logger.warning(
                "job %s: repair %d removed update %s of %s (version %d, weight %g)",
                self._name,
                record.entry,
                removed.update_id,
                removed.client_name or removed.client_id,
                removed.version,
                removed.weight,
            )
        quarantined = ", ".join(n or c for c, n in record.quarantine.items()) or "nobody"
        lost = summary.versions_lost
        logger.warning(
            "job %s: repair %d done: model at version %d, %d version%s lost, quarantined: %s (%s)",
            self._name,
            record.entry,
            record.version,
            lost,
            "" if lost == 1 else "s",
            quarantined,
            reason,
        )
        with self._lock:
            self._label = IntegrityState.HEALTHY
        return summary

    def _read_envelopes(self, seqs: set[int]) -> dict[int, bytes]:
        """The logged envelopes of ``seqs``, read on the journal thread (it owns the log)."""
        found: dict[int, bytes] = {}

        def read() -> None:
            for record in self._store.read_log():
                if isinstance(record, UpdateRecord) and record.seq in seqs:
                    found[record.seq] = record.envelope

        self._journal.call(read).result()
        missing = sorted(seqs - set(found))
        if missing:
            raise StateError(f"the log no longer holds the updates of seq {missing}")
        return found

    def _log_report(self, client: AccessClaims, report: IntegrityReport) -> None:
        who = client.client_name or client.client_id
        about = f" plus its update {report.update_id}" if report.update_id else ""
        if report.ok:
            logger.info(
                "job %s: %s checked version %d%s: good", self._name, who, report.version, about
            )
        else:
            logger.warning(
                "job %s: %s checked version %d%s: the %s check failed (%d blocks)",
                self._name,
                who,
                report.version,
                about,
                report.check or "unspecified",
                len(report.blocks),
            )


def parse_repair_request(body: bytes) -> tuple[list[uuid.UUID], bool]:
    """The update ids and the quarantine flag of a ``RepairCreate`` JSON body.

    Raises
    ------
    RequestError
        Not such a body (``request_invalid``); the detail never echoes input.
    """
    with client_input("the repair request", RequestError):
        try:
            request = RepairCreate.model_validate_json(body)
        except ValidationError as exc:
            detail = validation_detail(exc)
            raise RequestError(f"invalid repair request: {detail}") from None
    return request.update_ids, request.quarantine


def repair_view(summary: RepairSummary) -> RepairView:
    """A repair as the status and the administrator see it."""
    record = summary.record
    return RepairView(
        entry=record.entry,
        version=record.version,
        at=record.at,
        reason=record.reason,
        first_bad_version=record.first_bad_version,
        versions_lost=summary.versions_lost,
        removed=tuple(
            RemovedUpdateView(str(r.update_id), r.client_id, r.client_name, r.version, r.weight)
            for r in record.removed
        ),
        quarantined=tuple(record.quarantine),
    )


def _later_updates_of(
    history: UpdateHistory,
    remove: Sequence[UpdateRecord],
    culprits: Sequence[UpdateRecord],
    removed: Collection[uuid.UUID],
) -> tuple[UpdateRecord, ...]:
    """The other updates of ``culprits``' senders from the first of each one's in ``remove``
    on (applied since, or in the buffer), not removed already, in seq order."""
    since: dict[str, int] = {}
    for culprit in culprits:
        first = min(r.version for r in remove if r.client_id == culprit.client_id)
        since[culprit.client_id] = first
    named = {r.update_id for r in remove}
    return tuple(
        r
        for r in history
        if r.client_id in since
        and r.version >= since[r.client_id]
        and r.update_id not in named
        and r.update_id not in removed
    )


def _who(record: UpdateRecord) -> str:
    return f"{record.client_name or record.client_id} (update {record.update_id})"


def _describe(probe: ProbeView) -> str:
    if probe.update_id is None:
        return f"version {probe.version}"
    return f"version {probe.version} plus update {probe.update_id} (to its sender)"
