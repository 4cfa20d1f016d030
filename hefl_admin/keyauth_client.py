"""The administrator's side of keyauth's REST surface: tokens, clients, key epochs."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hefl_admin.errors import refusal
from hefl_admin.transport import Answer, ServiceHttp

__all__ = ["KeyauthAdmin"]


class KeyauthAdmin:
    """Typed calls to keyauth's admin endpoints (docs/protocol.md).

    Parameters
    ----------
    http
        keyauth behind a ``ServiceHttp``.
    admin_key
        Sent as ``X-Admin-Key``; ``None`` when none was configured: an admin call then
        fails before anything is sent.
    """

    def __init__(self, http: ServiceHttp, admin_key: str | None) -> None:
        self._http = http
        self._admin_key = admin_key

    def _admin_headers(self) -> dict[str, str]:
        if not self._admin_key:
            raise refusal(
                "no admin key: set KEYAUTH_ADMIN_KEY or pass --admin-key-file",
                code="admin_key_missing",
                http_status=401,
            )
        return {"X-Admin-Key": self._admin_key}

    def _admin(self, method: str, path: str, **kwargs: Any) -> Answer:
        return self._http.request(method, path, headers=self._admin_headers(), **kwargs)

    def health(self) -> dict[str, Any]:
        """``{"status", "key_epoch"}``; needs no admin key."""
        return self._http.request("GET", "/healthz").object()

    def create_enrollment_token(
        self, client_name: str, expires_in: int | None = None
    ) -> dict[str, Any]:
        """A single-use enrollment token for ``client_name``."""
        body: dict[str, Any] = {"client_name": client_name}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self._admin("POST", "/v1/enrollment-tokens", json=body).object()

    def create_viewer_token(self, expires_in: int | None = None) -> dict[str, Any]:
        """A viewer access token, ``{"access_token", "token_type", "expires_in"}``: it reads
        fl_server's status and operator page, and nothing else."""
        body = {"expires_in": expires_in} if expires_in is not None else None
        answer = self._admin("POST", "/v1/viewer/token", json=body).object()
        if not isinstance(answer.get("access_token"), str) or not answer["access_token"]:
            raise refusal(
                "keyauth's answer to POST /v1/viewer/token holds no access_token",
                code="response_malformed",
                http_status=200,
            )
        return answer

    def list_clients(self) -> list[dict[str, Any]]:
        return self._admin("GET", "/v1/clients").objects()

    def revoke_client(self, client_id: str) -> None:
        self._admin("DELETE", f"/v1/clients/{quote(client_id, safe='')}")

    def rotate_key_epoch(self) -> dict[str, Any]:
        return self._admin("POST", "/v1/key-epochs").object()

    def admin_token(self) -> str:
        """A fresh administrator access token, for fl_server's admin routes."""
        token = self._admin("POST", "/v1/admin/token").object().get("access_token")
        if not isinstance(token, str) or not token:
            raise refusal(
                "keyauth's answer to POST /v1/admin/token holds no access_token",
                code="response_malformed",
                http_status=200,
            )
        return token
