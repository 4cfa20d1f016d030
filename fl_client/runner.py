"""``Runner``: one hospital's client as a library object (a session, its rounds, a stop flag)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from fl_client.data import ClientData
from fl_client.events import EventSink, RoundResult
from fl_client.models import ModelFactory
from fl_client.output import Reporter
from fl_client.rounds import loop
from fl_client.rounds.context import RoundContext
from fl_client.rounds.loop import RunSummary
from fl_client.rounds.push import resume
from fl_client.session import Session, open_session
from fl_client.settings import ClientSettings
from fl_client.training import EvalResult

__all__ = ["Runner"]


class Runner:
    """One hospital's training loop against keyauth and fl_server.

    Parameters
    ----------
    settings
        Everything configurable (``FLCLIENT_*``).
    data
        This client's data; by default loaded from ``settings.data`` and ``settings.site``.
    model_factory
        By default resolved from ``settings.model``.
    keyauth_transport, server_transport
        httpx transports to use instead of the network (tests).
    reporter
        Where events and progress go; by default a ``Reporter`` for ``settings.output``.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        data: ClientData | None = None,
        model_factory: ModelFactory | None = None,
        keyauth_transport: httpx.BaseTransport | None = None,
        server_transport: httpx.BaseTransport | None = None,
        reporter: EventSink | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session: Session = open_session(
            settings,
            events=reporter or Reporter(settings.output),
            data=data,
            model_factory=model_factory,
            keyauth_transport=keyauth_transport,
            server_transport=server_transport,
            sleep=sleep,
            clock=clock,
        )
        self._stop = False

    @property
    def context(self) -> RoundContext:
        """What the rounds work with: settings, server port, caches, state, model, data."""
        return self.session.context

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request_stop(self) -> None:
        """Stop after the current round (a signal handler calls this)."""
        self._stop = True

    def resume(self) -> RoundResult | None:
        """Resend a journaled update left by a crash, with its original id."""
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
