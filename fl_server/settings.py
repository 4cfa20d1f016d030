"""Aggregation server configuration, read from ``FLSERVER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fl_server.staleness import StalenessKind, StalenessPolicy, make_staleness_policy

__all__ = ["ServerSettings"]

_DEFAULT_STALENESS_A = {"constant": 1.0, "polynomial": 0.5, "hinge": 10.0}


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
        Seconds between fetches of keyauth's revocation list (``0``: never fetch).
    state_dir
        Where the job, the write-ahead log and model checkpoints live. One server per
        directory (a lock file enforces it).
    target_updates
        The job is done once this many updates are applied.
    max_params
        The largest model layout accepted (it sizes every body limit and the memory held).
    staleness, staleness_a, staleness_b, mixing, max_staleness
        The staleness policy (see ``fl_server.staleness``); ``staleness_a`` defaults to
        0.5 for ``polynomial`` and 10 for ``hinge`` (Xie et al.).
    buffer_size
        FedBuff's K: weighted updates are summed in a buffer that is added to the model
        every K updates (1: every update is applied on arrival).
    max_training
        Clients that may hold a training slot (``POST /v1/slots``) at once.
    slot_ttl
        Seconds a slot lease lasts unless renewed or released by an update.
    client_updates_per_minute, client_update_burst
        Per-client token bucket on ``POST /v1/updates`` (``0``: no limit).
    max_queued_updates
        Updates admitted but not yet applied, across all clients; more get 503.
    checkpoint_every
        A model checkpoint is written every this many versions (bounds the log to replay).
    publish_max_lag
        While updates are queued, downloads may lag the applied model by at most this
        many versions (re-serializing the model after every update would halve ingest).
    max_layout_bytes, max_metrics_bytes
        Size limits of the JSON bodies of ``PUT /v1/job/layout`` and ``POST /v1/metrics``.
    max_metrics_reports
        Evaluation reports kept for the status page (the oldest are dropped).
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
    revocation_refresh: float = Field(default=15.0, ge=0)

    state_dir: Path = Path("fl-server-state")
    target_updates: int = Field(default=1000, ge=1)
    max_params: int = Field(default=100_000_000, ge=1)

    staleness: StalenessKind = "polynomial"
    staleness_a: float | None = Field(default=None, gt=0)
    staleness_b: int = Field(default=4, ge=0)
    mixing: float = Field(default=1.0, gt=0, le=1)
    max_staleness: int = Field(default=64, ge=0)
    buffer_size: int = Field(default=1, ge=1, le=10_000)

    max_training: int = Field(default=32, ge=1)
    slot_ttl: float = Field(default=900.0, gt=0)
    client_updates_per_minute: float = Field(default=60.0, ge=0)
    client_update_burst: int = Field(default=10, ge=1)
    max_queued_updates: int = Field(default=16, ge=1)

    checkpoint_every: int = Field(default=25, ge=1)
    publish_max_lag: int = Field(default=8, ge=1)
    max_layout_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_metrics_bytes: int = Field(default=64 * 1024, ge=1024)
    max_metrics_reports: int = Field(default=10_000, ge=1)
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

    def staleness_policy(self) -> StalenessPolicy:
        """The configured staleness policy."""
        a = (
            self.staleness_a
            if self.staleness_a is not None
            else _DEFAULT_STALENESS_A[self.staleness]
        )
        return make_staleness_policy(
            self.staleness,
            a=a,
            b=self.staleness_b,
            mixing=self.mixing,
            max_staleness=self.max_staleness,
        )
