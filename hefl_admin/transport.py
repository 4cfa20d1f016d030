"""Calls to one service over HTTP: JSON answers; problems and transport errors translated once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from hefl_admin.errors import UnreachableError, refusal
from hefl_wire import ProblemError

__all__ = ["Answer", "ServiceHttp"]

# What a service (or a proxy) answers for a path it does not have.
_NO_SUCH_PATH = frozenset({"not_found", "http_404"})


@dataclass(frozen=True)
class Answer:
    """A successful answer: its status and its JSON body (``None`` when it has none)."""

    service: str
    status: int
    body: Any

    def object(self) -> dict[str, Any]:
        """The body as a JSON object; ``response_malformed`` if it is none."""
        if not isinstance(self.body, dict):
            raise _malformed(self.service, self.status, "a JSON object")
        return self.body

    def objects(self) -> list[dict[str, Any]]:
        """The body as a JSON array of objects; ``response_malformed`` if it is none."""
        if not isinstance(self.body, list) or not all(isinstance(b, dict) for b in self.body):
            raise _malformed(self.service, self.status, "a JSON array of objects")
        return self.body


def _malformed(service: str, status: int, expected: str) -> Exception:
    return refusal(
        f"{service} answered {status} with a body that is not {expected}",
        code="response_malformed",
        http_status=status,
    )


class ServiceHttp:
    """One service (keyauth or fl_server) behind an ``httpx.Client``.

    Parameters
    ----------
    http
        An ``httpx.Client`` whose ``base_url`` is the service (any transport: tests use
        ``httpx.MockTransport``).
    service
        The service's name in messages: ``keyauth`` or ``fl_server``.
    url
        The URL as the administrator gave it, for messages.
    """

    def __init__(self, http: httpx.Client, *, service: str, url: str) -> None:
        self._http = http
        self.service = service
        self.url = url

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> Answer:
        """Send one request; no retries: every command is one administrator's action.

        Raises
        ------
        hefl_wire.ProblemError
            The service answered >= 400 (its problem's code and detail), or a body that
            is not JSON (``response_malformed``).
        UnreachableError
            The service could not be reached.
        """
        sent = {"Accept": "application/json", **(headers or {})}
        if content is not None:
            sent["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, headers=sent, json=json, content=content)
        except httpx.TransportError as exc:
            raise UnreachableError(f"cannot reach {self.service} at {self.url}: {exc}") from exc
        if response.is_error:
            raise self._refusal(response, f"{method} {path}")
        if response.status_code == 204 or not response.content:
            return Answer(self.service, response.status_code, None)
        try:
            return Answer(self.service, response.status_code, response.json())
        except ValueError:
            raise _malformed(self.service, response.status_code, "JSON") from None

    def _refusal(self, response: httpx.Response, request: str) -> ProblemError:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):  # a proxy's page, not a service's problem
            problem = {"code": f"http_{response.status_code}", "detail": response.reason_phrase}
        code = str(problem.get("code") or "http_error")
        detail = str(
            problem.get("detail") or problem.get("title") or f"HTTP {response.status_code}"
        )
        if code in _NO_SUCH_PATH:
            # No resource of the service: another service at this URL, or an older one.
            detail = (
                f"{self.service} at {self.url} has no {request} ({detail}): "
                f"is that {self.service}, and as recent as hefl-admin?"
            )
        return refusal(detail, code=code, http_status=response.status_code)
