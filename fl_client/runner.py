"""``Runner``: one hospital's client of one job as a library object (session, rounds, stop)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from fl_client.data import ClientData
from fl_client.events import EventSink, JobJoined, RoundResult
from fl_client.hospital_data import JobData
from fl_client.output import Reporter
from fl_client.rounds import loop
from fl_client.rounds.context import RoundContext
from fl_client.rounds.lease import give_back_next_lease
from fl_client.rounds.loop import RunSummary
from fl_client.rounds.push import resume
from fl_client.session import Session, open_session
from fl_client.settings import ClientSettings
from fl_client.training import EvalResult

__all__ = ["Runner"]


class Runner:
    """One hospital's training loop on one job (``settings.job``) of fl_server.

    The model, training and wire settings come from the job's spec, verified against
    its hash; the data is checked against the spec before anything is sent.

    Parameters
    ----------
    settings
        This hospital's own settings (``FLCLIENT_*``).
    data
        This client's data; by default loaded from ``settings.data`` and checked.
    keyauth_transport, server_transport
        httpx transports to use instead of the network (tests).
    reporter
        Where events and progress go; by default a ``Reporter`` for ``settings.output``.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        data: JobData | ClientData | None = None,
        keyauth_transport: httpx.BaseTransport | None = None,
        server_transport: httpx.BaseTransport | None = None,
        reporter: EventSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        events = reporter or Reporter(settings.output)
        self.session: Session = open_session(
            settings,
            events=events,
            data=data,
            keyauth_transport=keyauth_transport,
            server_transport=server_transport,
            sleep=sleep,
            clock=clock,
        )
        self._stop = False
        session = self.session
        events.emit(
            JobJoined(
                job=session.job.name,
                spec_sha256=session.job.spec_sha256,
                task=session.spec.data.task,
                model=session.spec.model.name or session.spec.model.factory or "",
                train_rows=len(session.context.data.train),
                test_rows=len(session.context.data.test),
                state=session.job.state,
                version=session.job.version,
            )
        )

    @property
    def context(self) -> RoundContext:
        """What the rounds work with: spec, server port, caches, state, model, data."""
        return self.session.context

    def close(self) -> None:
        give_back_next_lease(self.context)  # a lease the last update carried, not taken
        self.session.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_stop(self) -> None:
        """Stop after the current round (a signal handler calls this)."""
        self._stop = True

    def resume(self) -> RoundResult | None:
        """Resend a journaled update left by a crash or a pause, with its original id."""
        return resume(self.context)

    def run_round(self) -> RoundResult | None:
        """Pull, train, push one update. ``None`` when the job is done.

        Raises
        ------
        RetrainError
            The server rejected the update as too stale, or for another key epoch or
            version (nothing was committed): call again to re-pull and retrain.
        """
        return loop.run_round(self.context)

    def evaluate_global(self, publish_wait: float = 30.0) -> tuple[int, EvalResult]:
        """Pull the current global model and evaluate it on the held-out split."""
        return loop.evaluate_global(self.context, publish_wait)

    def run(self) -> RunSummary:
        """Rounds until the job is done or a stop condition (max rounds, duration, signal)."""
        return loop.run(self.context, stop_requested=lambda: self._stop)
