"""``RoundContext``: what one client's rounds work with; none of it speaks HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from fl_client.data import ClientData
from fl_client.events import EventSink
from fl_client.rounds.keys import KeyCache, LayoutCache
from fl_client.rounds.port import ServerPort
from fl_client.settings import ClientSettings
from fl_client.state import LocalState, ModelCache
from fl_client.training import TrainConfig
from fl_client.updates import CompressionConfig

__all__ = ["RoundContext"]


@dataclass
class RoundContext:
    """One client's rounds: the server port, its caches and files, its model and data.

    ``cache`` is the last pulled model (decrypted); the next pull asks only for what
    changed since. ``sleep`` and ``clock`` are injectable so tests wait for nothing.
    """

    settings: ClientSettings
    server: ServerPort
    keys: KeyCache
    layouts: LayoutCache
    state: LocalState
    events: EventSink
    model: nn.Module
    data: ClientData
    train_config: TrainConfig
    compression: CompressionConfig
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    cache: ModelCache | None = None
