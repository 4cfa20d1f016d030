"""Conditional requests: whether an ``If-None-Match`` names a resource's current ETag."""

from __future__ import annotations

__all__ = ["etag_matches"]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` or is ``*`` (weak comparison, RFC 9110 13.1.2).

    keyauth answers its revocation list with it; fl_server's model downloads compare the
    same way (``fl_server.downloads.etag_matches``).
    """
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False
