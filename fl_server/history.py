"""The updates of the repair window: which version each made, kept so a version can be rebuilt.

A past version ``x`` is the model minus every update applied after it, so the server can
rebuild it, and remove an update, only while the log still holds those updates: the
last ``FLSERVER_REPAIR_WINDOW`` versions. This is what the apply worker remembers of
them (the headers; the envelopes stay in the log), and what the checkpoint must not drop.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from fl_server.store import UpdateRecord

__all__ = ["UpdateHistory"]


class UpdateHistory:
    """The logged updates (without their envelopes) of the versions a repair may touch.

    Not thread-safe: the apply worker alone changes and reads it.

    Parameters
    ----------
    window
        How many versions back a version may be rebuilt or an update removed.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"the repair window must be at least 1 version, got {window!r}")
        self.window = window
        self._records: dict[uuid.UUID, UpdateRecord] = {}  # in seq order

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[UpdateRecord]:
        return iter(list(self._records.values()))

    def add(self, record: UpdateRecord) -> None:
        """Remember ``record`` (its envelope is not kept)."""
        self._records[record.update_id] = record.without_envelope()

    def floor(self, version: int) -> int:
        """The oldest version that can be rebuilt while the model is at ``version``."""
        return max(0, version - self.window)

    def trim(self, version: int) -> None:
        """Forget the updates of versions at or below the floor of ``version``."""
        floor = self.floor(version)
        for update_id in [u for u, r in self._records.items() if r.version <= floor]:
            del self._records[update_id]

    def get(self, update_id: uuid.UUID) -> UpdateRecord | None:
        return self._records.get(update_id)

    def made(self, version: int) -> list[UpdateRecord]:
        """The updates that formed ``version`` (one, or a buffer's), in seq order."""
        return [r for r in self._records.values() if r.version == version]

    def after(self, version: int, up_to: int) -> list[UpdateRecord]:
        """The updates applied after ``version``, in versions up to ``up_to``, in seq order."""
        return [r for r in self._records.values() if version < r.version <= up_to]

    def oldest_seq(self) -> int | None:
        """The ``seq`` of the oldest update remembered: the log must keep it and all after."""
        return min((r.seq for r in self._records.values()), default=None)
