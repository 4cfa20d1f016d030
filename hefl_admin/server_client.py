"""The administrator's side of fl_server's jobs (``/v1/jobs``), with an admin access token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hefl_admin.errors import refusal
from hefl_admin.transport import ServiceHttp

__all__ = ["JobCreated", "ServerAdmin"]


@dataclass(frozen=True)
class JobCreated:
    """The server's answer to a spec: the job, and whether this call created it (201) or
    found it created by the same spec already (200)."""

    job: dict[str, Any]
    created: bool


class ServerAdmin:
    """Typed calls to fl_server's job routes (docs/protocol.md).

    Parameters
    ----------
    http
        fl_server behind a ``ServiceHttp``.
    access_token
        An administrator access token from keyauth (``KeyauthAdmin.admin_token``).
    """

    def __init__(self, http: ServiceHttp, access_token: str) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {access_token}"}

    def _call(self, method: str, path: str) -> dict[str, Any]:
        return self._http.request(method, path, headers=self._headers).object()

    @staticmethod
    def _job_path(name: str, action: str = "") -> str:
        return f"/v1/jobs/{quote(name, safe='')}{action}"

    def create_job(self, spec_json: str) -> JobCreated:
        """Create the job of a spec's canonical JSON (``hefl_study.spec_to_json``)."""
        answer = self._http.request(
            "POST", "/v1/jobs", headers=self._headers, content=spec_json.encode("utf-8")
        )
        return JobCreated(job=answer.object(), created=answer.status == 201)

    def list_jobs(self) -> list[dict[str, Any]]:
        return self._http.request("GET", "/v1/jobs", headers=self._headers).objects()

    def failed_jobs(self) -> list[dict[str, Any]]:
        """The job directories the server could not open at startup: ``{"name", "error"}``.

        ``GET /v1/jobs`` lists only the jobs the server serves; these answer
        ``state_invalid`` to every call.
        """
        status = self._http.request("GET", "/v1/status", headers=self._headers)
        failed = status.object().get("failed_jobs", [])
        if not isinstance(failed, list) or not all(isinstance(f, dict) for f in failed):
            raise refusal(
                "fl_server's GET /v1/status has a failed_jobs that is not a list of objects",
                code="response_malformed",
                http_status=status.status,
            )
        return failed

    def job(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._job_path(name))

    def status(self, name: str) -> dict[str, Any]:
        """The job's status: the job, per-hospital counts and metrics, stop rules."""
        return self._call("GET", self._job_path(name, "/status"))

    def pause(self, name: str) -> dict[str, Any]:
        return self._call("POST", self._job_path(name, "/pause"))

    def resume(self, name: str) -> dict[str, Any]:
        return self._call("POST", self._job_path(name, "/resume"))

    def stop(self, name: str) -> dict[str, Any]:
        return self._call("POST", self._job_path(name, "/stop"))

    def rotate(self, name: str) -> dict[str, Any]:
        """Move the job to keyauth's current key epoch (``POST .../rotation``); the job."""
        return self._call("POST", self._job_path(name, "/rotation"))

    def repair(self, name: str, update_ids: list[str], *, quarantine: bool) -> dict[str, Any]:
        """Remove updates from the job's model exactly (``POST .../repairs``); the repair."""
        body = {"update_ids": update_ids, "quarantine": quarantine}
        answer = self._http.request(
            "POST", self._job_path(name, "/repairs"), headers=self._headers, json=body
        )
        return answer.object()

    def release(self, name: str, client_id: str) -> None:
        """Let a quarantined client send updates to the job again."""
        path = self._job_path(name, f"/quarantine/{quote(client_id, safe='')}")
        self._http.request("DELETE", path, headers=self._headers)
