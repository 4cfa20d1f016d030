"""Publishing the applied model for downloads, and checkpointing it, on the apply worker.

The shards serialize the blocks that changed; this process keeps only the bytes it serves.
"""

from __future__ import annotations

from collections.abc import Callable

from fl_server.job import JobLifecycle
from fl_server.journal import Journal
from fl_server.settings import ServerSettings
from fl_server.state import ModelState
from fl_server.store import Store

__all__ = ["Publisher"]


class Publisher:
    """Decides when downloads see the applied model and when a checkpoint is written.

    Runs on the apply worker only (``after_task`` is the worker's hook).

    Parameters
    ----------
    settings
        ``publish_max_lag`` and ``checkpoint_every``.
    lifecycle
        The live model state.
    journal, store
        Where checkpoints are written, after every log record before them.
    interrupt
        Whether an update is waiting: serializing gives way to it.
    """

    def __init__(
        self,
        settings: ServerSettings,
        lifecycle: JobLifecycle,
        journal: Journal,
        store: Store,
        *,
        interrupt: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._journal = journal
        self._store = store
        self._interrupt = interrupt

    def after_task(self, idle: bool) -> None:
        state = self._lifecycle.state
        if state is None or self._lifecycle.failure is not None:
            return
        lag = state.version - state.snapshot.version
        if not lag or not (idle or lag >= self._settings.publish_max_lag):
            return
        # When idle, publish at once but give way to an update that arrives meanwhile: a
        # stream of updates is re-serialized only every publish_max_lag versions.
        forced = lag >= self._settings.publish_max_lag
        if not state.serialize_changed(None if forced else self._interrupt):
            return
        due = state.version - self._lifecycle.checkpoint_version >= self._settings.checkpoint_every
        self._publish(state, checkpoint=due and state.buffered == 0)

    def final_checkpoint(self) -> None:
        """Checkpoint what is applied, if worthwhile: the next start then replays nothing."""
        state = self._lifecycle.state
        if state is None or self._lifecycle.failure is not None:
            return
        if state.buffered == 0 and state.version > self._lifecycle.checkpoint_version:
            self._publish(state, checkpoint=True)

    def _publish(self, state: ModelState, *, checkpoint: bool) -> None:
        # Never serve a model holding an update that could still be lost.
        self._journal.wait_durable(state.seq)
        state.publish()
        if checkpoint:
            snapshot = state.checkpoint()
            self._journal.call(lambda: self._store.write_checkpoint(snapshot))
            self._lifecycle.checkpointed(state.version)
