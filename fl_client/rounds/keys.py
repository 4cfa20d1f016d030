"""The caches a client keeps across rounds: its layout per block size, a cipher per key epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crypto import ClientCipher, CryptoError, LayoutError, ModelLayout, build_layout, get_profile
from fl_client.errors import ConfigError
from fl_client.events import EventSink, KeyEpochFetched
from fl_client.rounds.port import SecretContextSource
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
        self._ciphers: dict[int, ClientCipher] = {}

    def cipher(self, key_epoch: int) -> ClientCipher:
        cipher = self._ciphers.get(key_epoch)
        if cipher is not None:
            return cipher
        stored = self._state.load_secret_context(key_epoch)
        if stored is None:
            context = self._fetch(key_epoch)
            self._state.save_secret_context(context.key_epoch, context.profile, context.data)
            stored = (context.profile, context.data)
            self._events.emit(KeyEpochFetched(key_epoch=key_epoch, profile=context.profile))
        profile_name, data = stored
        try:
            cipher = ClientCipher(data, get_profile(profile_name))
        except CryptoError as exc:
            raise ConfigError(f"secret context of key epoch {key_epoch}: {exc}") from exc
        self._ciphers[key_epoch] = cipher
        return cipher
