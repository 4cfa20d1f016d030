"""Aggregation server configuration, read from ``FLSERVER_*`` environment variables.

These are the process's settings. What belongs to one job (its staleness policy, buffer,
training slots and stop rules) comes from the job's study spec (``fl_server.jobspec``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    """Settings of the aggregation server.

    Parameters
    ----------
    host, port
        Where ``hefl-server`` binds (uvicorn's ``--host``/``--port`` when started by hand).
    tls_certfile, tls_keyfile
        Served by ``hefl-server`` when both are set. Clients share one CKKS key, so off
        loopback the transport must be confidential (TLS here or at a proxy).
    keyauth_url
        Base URL of the key authority; the public context and the token verification key
        are fetched from it at startup.
    keyauth_attempts, keyauth_retry_delay, keyauth_timeout
        Startup fetch: attempts, first delay between them in seconds (doubling, at most
        10 s) and per-request timeout.
    revocation_refresh
        Seconds between fetches of keyauth's revocation list (``0``: never fetch). Each
        fetch is conditional (``If-None-Match``): an unchanged list is a bodiless 304, so
        the default half second refuses a revoked client within a second at little cost.
    state_dir
        Where the jobs live, one directory each (``jobs/<name>/``: the job, its
        write-ahead log, checkpoints, metrics). One server per directory (a lock file
        enforces it).
    max_params
        The largest model layout accepted (it sizes every body limit and the memory held).
    slot_ttl
        Seconds a slot lease lasts unless renewed or released by an update.
    update_lease_wait
        An update that asks for the next lease (``POST …/updates?lease=next``) waits at most
        this long for the model that holds it to be published; past it, the plain 202.
    client_updates_per_minute, client_update_burst
        Per-client token bucket on each job's ``POST .../updates`` (``0``: no limit).
    max_queued_updates
        Updates admitted but not yet applied, per job across its clients; more get 503.
    checkpoint_every
        A model checkpoint is written every this many versions (bounds the log to replay).
    publish_max_lag
        While updates are queued, downloads may lag the applied model by at most this
        many versions (re-serializing the model after every update would halve ingest).
    max_layout_bytes, max_metrics_bytes, max_spec_bytes
        Size limits of the JSON bodies of a layout, a metrics report and a study spec.
    max_metrics_reports
        Evaluation reports kept per job for the status page (the oldest are dropped).
    stop_check_interval
        Seconds between checks of each job's training time against its wall-time budget
        (the time spent is also saved then, at most every 10 s), and of integrity probes
        past their deadline.
    repair_window
        How many versions back a job can rebuild a version and remove an update: the log
        keeps the updates of that many versions beyond the checkpoint (about 8 bytes per
        parameter per full update on ``n4096-s40``, docs/fl_server.md "Integrity").
    probe_timeout
        Seconds the sender of a suspect update has to check its own update (an integrity
        probe); one that does not answer has its update removed, but is not quarantined.
    shards
        Worker processes per job that hold the model's ciphertexts, each a range of its
        blocks, and do every ciphertext operation (``fl_server.shards``); 0 keeps them in
        the server's process (one core, no processes: for tests). docs/fl_server.md,
        "Shards".
    rotation_timeout
        Seconds the hospital asked to re-encrypt the model for a key rotation has to
        upload it; then another hospital is asked (docs/fl_server.md, "Key rotation").
    status_access
        Who may read the status (``GET /v1/status``, ``GET /v1/jobs/{job}/status``), and so
        the operator page (``/ui``) that shows it: ``"token"`` (the default: a viewer,
        administrator or client access token from keyauth) or ``"public"`` (anyone who
        reaches the server, an explicit opt-in). The status names the hospitals and their
        activity, so it is not shown to anybody on the network unless asked.
    log_level
        Level of fl_server's own log lines (uvicorn's access log is uvicorn's).
    """

    model_config = SettingsConfigDict(env_prefix="FLSERVER_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8800, ge=1, le=65_535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    keyauth_url: str = "http://127.0.0.1:8700"
    keyauth_attempts: int = Field(default=30, ge=1)
    keyauth_retry_delay: float = Field(default=0.5, gt=0)
    keyauth_timeout: float = Field(default=5.0, gt=0)
    revocation_refresh: float = Field(default=0.5, ge=0)

    state_dir: Path = Path("fl-server-state")
    max_params: int = Field(default=100_000_000, ge=1)

    slot_ttl: float = Field(default=900.0, gt=0)
    update_lease_wait: float = Field(default=1.0, ge=0, le=60)
    client_updates_per_minute: float = Field(default=60.0, ge=0)
    client_update_burst: int = Field(default=10, ge=1)
    max_queued_updates: int = Field(default=16, ge=1)

    checkpoint_every: int = Field(default=25, ge=1)
    publish_max_lag: int = Field(default=8, ge=1)
    max_layout_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_metrics_bytes: int = Field(default=64 * 1024, ge=1024)
    max_spec_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_metrics_reports: int = Field(default=10_000, ge=1)
    stop_check_interval: float = Field(default=1.0, gt=0)
    repair_window: int = Field(default=16, ge=1)
    probe_timeout: float = Field(default=120.0, gt=0)
    rotation_timeout: float = Field(default=60.0, gt=0)
    shards: int = Field(default=2, ge=0, le=64)
    status_access: Literal["public", "token"] = "token"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("set both tls_certfile and tls_keyfile, or neither")
        return self

    @model_validator(mode="after")
    def _keyauth_url_is_http(self) -> Self:
        if not self.keyauth_url.startswith(("http://", "https://")):
            raise ValueError(f"keyauth_url must be an http(s) URL, got {self.keyauth_url!r}")
        return self
