"""``RoundContext``: what one client's rounds work with; none of it speaks HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from fl_client.data import ClientData
from fl_client.events import EventSink
from fl_client.rounds.keys import KeyCache, LayoutCache
from fl_client.rounds.port import JobInfo, LeasedModel, ServerPort
from fl_client.settings import ClientSettings
from fl_client.state import JobState, ModelCache
from fl_client.training import TrainConfig
from fl_client.updates import CompressionConfig
from hefl_study import StudySpec

if TYPE_CHECKING:  # Opacus is imported only by a study with [privacy]
    from fl_client.privacy import HospitalPrivacy

__all__ = ["RoundContext"]


@dataclass
class RoundContext:
    """One client's rounds of one job: the port, its caches and files, its model and data.

    ``spec`` is the job's study (verified against its hash): ``train_config`` and
    ``compression`` follow from it, and the model was built from it. ``settings`` holds
    only this hospital's own choices (when to stop, retries, step delay). ``cache`` is
    the last pulled model (decrypted); the next pull asks only for what changed since.
    ``sleep`` and ``clock`` are injectable so tests wait for nothing. ``stop_requested``
    says whether this hospital wants to stop taking part (a signal, ``max_duration``):
    waiting for a paused job, or for a repair, ends then. ``client_id`` is this
    hospital's (the server probes a client's own update with it). ``privacy`` is this
    hospital's DP-SGD and its accountant when the study has a ``[privacy]`` section.
    ``job`` is the job as last read, ``None`` once the server said it changed;
    ``combined_requests``: a round takes its lease with the pull and sends its metrics
    with the update (``fl_client.rounds.lease``); ``lease_with_update``: the update also
    asks for the next round's lease and model, kept in ``next_lease`` with the cached
    version they were asked against until the next round takes them.
    """

    settings: ClientSettings
    spec: StudySpec
    server: ServerPort
    keys: KeyCache
    layouts: LayoutCache
    state: JobState
    events: EventSink
    model: nn.Module
    data: ClientData
    train_config: TrainConfig
    compression: CompressionConfig
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    cache: ModelCache | None = None
    stop_requested: Callable[[], bool] = lambda: False
    client_id: str | None = None
    privacy: HospitalPrivacy | None = None
    job: JobInfo | None = None
    combined_requests: bool = True
    lease_with_update: bool = True
    next_lease: tuple[int | None, LeasedModel] | None = None
