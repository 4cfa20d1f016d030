"""Reading a service's answer: problems become typed errors, JSON bodies checked fields."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from fl_client.errors import ProtocolError, error_from_problem

__all__ = ["json_field", "json_object", "parse_retry_after", "raise_for_problem"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of a >= 400 answer (``fl_client.errors``); pass others."""
    if response.status_code < 400:
        return
    problem = _problem_of(response)
    raise error_from_problem(
        response.status_code,
        problem,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    """The answer's body as a JSON object, or a ``ProtocolError`` naming ``what``."""
    try:
        body = response.json()
    except ValueError as exc:
        raise ProtocolError(f"{what}: answer is not JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: answer is not a JSON object")
    return body


def json_field(body: Mapping[str, Any], key: str, kind: type, what: str) -> Any:
    """``body[key]`` if it is a ``kind`` (a bool is no int), else a ``ProtocolError``."""
    value = body.get(key)
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        raise ProtocolError(f"{what}: field {key!r} missing or not {kind.__name__}")
    return value
