"""Model downloads: the published envelope, whole or changed blocks only, or "not modified"."""

from __future__ import annotations

from fl_server.domain import ModelDownload
from fl_server.job import JobLifecycle
from fl_server.traffic import Traffic

__all__ = ["ModelDownloads", "etag_matches"]


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an ``If-None-Match`` value names ``etag`` (weakly) or is ``*``."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class ModelDownloads:
    """Serves the published model snapshot and counts the bytes sent."""

    def __init__(self, lifecycle: JobLifecycle, traffic: Traffic) -> None:
        self._lifecycle = lifecycle
        self._traffic = traffic

    def download(self, since: int | None, if_none_match: str | None) -> ModelDownload:
        """The published model, or only the blocks changed after ``since``, to stream.

        No body when ``if_none_match`` names the published version: the client holds it,
        whatever it asked for.

        Raises
        ------
        JobStateError
            The job has no initial model yet.
        VersionAheadError
            ``since`` is ahead of the published model.
        """
        snapshot = self._lifecycle.snapshot()
        if since is not None:
            snapshot.changed_since(since)  # a version from the future is refused, 304 or not
        if if_none_match is not None and etag_matches(if_none_match, snapshot.etag):
            return ModelDownload(snapshot.etag, snapshot.version, None)
        body = snapshot.envelope(since)
        self._traffic.count_out(body.length)
        return ModelDownload(snapshot.etag, snapshot.version, body)
