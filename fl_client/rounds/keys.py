"""The caches a client keeps across rounds: its layout per block size, a cipher per key epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crypto import (
    ClientCipher,
    CryptoError,
    LayoutError,
    ModelLayout,
    build_layout,
    get_profile,
    key_id,
)
from fl_client.errors import ConfigError, KeyIdMismatchError
from fl_client.events import EventSink, KeyEpochFetched
from fl_client.rounds.port import JobInfo, SecretContext, SecretContextSource
from fl_client.state import LocalState

__all__ = ["KeyCache", "LayoutCache"]


class LayoutCache:
    """This client's model layout per block size (personal tensors left out).

    Parameters
    ----------
    initial_state
        The model's ``state_dict`` as initialized from the seed: what the layout is built
        from, the initial model a job may start with, and the first personal values.
    personal
        fnmatch patterns of the tensors that never leave the hospital (the spec's
        ``communication.personal``).
    """

    def __init__(self, initial_state: Mapping[str, Any], personal: Sequence[str]) -> None:
        self.initial_state = dict(initial_state)
        self._personal = list(personal)
        self._layouts: dict[int, ModelLayout] = {}

    def get(self, block_size: int) -> ModelLayout:
        layout = self._layouts.get(block_size)
        if layout is None:
            try:
                layout = build_layout(self.initial_state, block_size, personal=self._personal)
            except LayoutError as exc:
                raise ConfigError(f"the model cannot be shared: {exc}") from exc
            self._layouts[block_size] = layout
        return layout


class KeyCache:
    """The cipher of each key epoch: from the local state, or fetched from keyauth once.

    A job names the key id of its epoch's keys (``JobInfo.key_id``); ``for_job`` checks
    that the context this hospital holds has it, and fetches the epoch's context again
    once if it has not (this hospital kept a context keyauth has since replaced).

    Parameters
    ----------
    state
        Where secret contexts are kept (0600).
    fetch
        Fetches a key epoch's secret context from the key authority.
    events
        Told when a new key epoch was fetched.
    """

    def __init__(self, state: LocalState, fetch: SecretContextSource, events: EventSink) -> None:
        self._state = state
        self._fetch = fetch
        self._events = events
        self._ciphers: dict[int, tuple[ClientCipher, str]] = {}

    def cipher(self, key_epoch: int) -> ClientCipher:
        """The cipher of a key epoch, whatever its key id."""
        return self._cipher(key_epoch, None)

    def for_job(self, job: JobInfo, key_epoch: int | None = None) -> ClientCipher:
        """The cipher of ``key_epoch`` (the job's by default), checked against the job's
        key id when it is the job's epoch and the job states one.

        Raises
        ------
        KeyIdMismatchError
            Neither the context this hospital holds nor the one keyauth serves for the
            epoch has the job's key id: keyauth's keys were replaced since the job was
            created.
        """
        epoch = job.key_epoch if key_epoch is None else key_epoch
        expected = job.key_id if epoch == job.key_epoch else None
        try:
            return self._cipher(epoch, expected)
        except KeyIdMismatchError as exc:
            raise KeyIdMismatchError(
                f"job {job.name!r} was created under key id {_short(job.key_id)} of key epoch "
                f"{epoch}, but {exc}: keyauth's keys were replaced (its state lost or "
                "generated again) since the job was created, and the job cannot continue "
                "under other keys. Nothing was trained. Ask the operator: the job must be "
                "created again under the current keys, or keyauth's old keys restored."
            ) from None

    def for_epoch(self, key_epoch: int, key_id: str | None) -> ClientCipher:
        """The cipher of ``key_epoch``, checked against ``key_id`` if given (a key rotation
        names the new epoch's key id before the job is under it).

        Raises
        ------
        KeyIdMismatchError
            Neither the context held nor the one keyauth serves has that key id.
        """
        return self._cipher(key_epoch, key_id)

    def _cipher(self, key_epoch: int, expected: str | None) -> ClientCipher:
        cached = self._cipher_of(key_epoch)
        if expected is not None and cached[1] != expected:
            # This hospital may hold a context keyauth replaced before the job was created:
            # keyauth's context is taken if it is the job's, else nothing is changed.
            context = self._fetch(key_epoch)
            served = key_id(context.data)
            if served != expected:
                raise KeyIdMismatchError(
                    f"this hospital holds key id {_short(cached[1])} and keyauth serves "
                    f"{_short(served)}"
                )
            self._keep(context)
            self._ciphers.pop(key_epoch, None)
            cached = self._cipher_of(key_epoch)
        return cached[0]

    def _cipher_of(self, key_epoch: int) -> tuple[ClientCipher, str]:
        cached = self._ciphers.get(key_epoch)
        if cached is not None:
            return cached
        stored = self._state.load_secret_context(key_epoch)
        if stored is None:
            context = self._fetch(key_epoch)
            self._keep(context)
            stored = (context.profile, context.data)
        profile_name, data = stored
        try:
            cipher = ClientCipher(data, get_profile(profile_name))
        except CryptoError as exc:
            raise ConfigError(f"secret context of key epoch {key_epoch}: {exc}") from exc
        self._ciphers[key_epoch] = cached = (cipher, key_id(data))
        return cached

    def _keep(self, context: SecretContext) -> None:
        self._state.save_secret_context(context.key_epoch, context.profile, context.data)
        self._events.emit(KeyEpochFetched(key_epoch=context.key_epoch, profile=context.profile))


def _short(key_id: str | None) -> str:
    # 64 bits of a SHA-256 tell two keys apart in a message
    return f"{key_id[:16]}…" if key_id else "(none)"
