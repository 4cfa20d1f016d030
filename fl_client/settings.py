"""``ClientSettings``: every knob of the hospital client, from ``FLCLIENT_*`` or the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClientSettings", "Compression", "OutputMode"]

Compression = Literal["dense", "top-k", "random-k"]
OutputMode = Literal["human", "quiet", "json"]


class ClientSettings(BaseSettings):
    """Settings of one hospital client; environment variables are ``FLCLIENT_<NAME>``.

    The CKKS profile is not a setting: it comes with the key epoch from the key
    authority's enrollment answer (and ``X-Hefl-Profile`` on the secret context).
    """

    model_config = SettingsConfigDict(env_prefix="FLCLIENT_", extra="forbid")

    # where things live
    state_dir: Path = Field(
        default=Path("~/.hefl-client"),
        description="Local directory for the credential, secret contexts and the update "
        "journal; created 0700, files 0600.",
    )
    keyauth_url: str = Field(default="http://127.0.0.1:8700", description="Key authority.")
    server_url: str = Field(default="http://127.0.0.1:8800", description="Aggregation server.")
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow plain http:// to a non-loopback host. Clients share one key per "
        "epoch, so without TLS any client could decrypt another's upload.",
    )

    # data
    data: str = Field(
        default="heart-disease",
        description="A bundled dataset (heart-disease, digits, breast-cancer) or an import "
        "path 'pkg.mod:factory' returning fl_client.ClientData.",
    )
    site: str | None = Field(
        default=None,
        description="This hospital's site: a heart-disease hospital (cleveland, hungary, "
        "switzerland, va-long-beach) or a Dirichlet site index 0..n_sites-1.",
    )
    n_sites: int = Field(default=4, ge=1, description="Sites of a Dirichlet split.")
    dirichlet_alpha: float = Field(default=0.5, gt=0, description="Label skew of the split.")
    data_seed: int = Field(default=0, ge=0, description="Seed of the site and test splits.")
    test_fraction: float = Field(
        default=0.34, gt=0, lt=1, description="Held-out share of each site's rows."
    )

    # model and local training
    model: str = Field(
        default="logistic",
        description="A built-in model (logistic, mlp, cnn) or an import path "
        "'pkg.mod:factory' called as factory(input_shape=..., n_classes=...).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of model init and batch order.")
    local_epochs: int = Field(default=1, ge=1, description="Local epochs per round.")
    local_steps: int | None = Field(
        default=None, ge=1, description="Local optimizer steps per round (overrides epochs)."
    )
    batch_size: int = Field(default=16, ge=1)
    step_delay: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="Seconds slept after each local optimizer step: simulates a slower "
        "hospital machine (demo and benchmarks).",
    )
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.05, gt=0, description="Local learning rate.")
    momentum: float = Field(default=0.0, ge=0, lt=1, description="SGD momentum.")

    # what goes on the wire
    client_step: float = Field(
        default=1.0,
        gt=0,
        description="η of protocol.md: the update sent is η·compressed(trained - pulled).",
    )
    compression: Compression = Field(
        default="dense",
        description="dense: every block; top-k: the blocks of largest norm; random-k: "
        "blocks drawn from compression_seed and the round.",
    )
    block_fraction: float = Field(
        default=0.1, gt=0, le=1, description="Share of blocks top-k/random-k send."
    )
    compression_seed: int = Field(default=0, ge=0, description="Seed of random-k.")
    error_feedback: bool = Field(
        default=True, description="Add what was not sent to the next update."
    )
    personal: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of parameter names that never leave the hospital "
        "(FedPer); every client of a job must use the same patterns.",
    )

    # stop conditions
    max_rounds: int | None = Field(default=None, ge=1, description="Stop after N updates.")
    max_duration: float | None = Field(default=None, gt=0, description="Stop after N seconds.")

    # network behaviour
    timeout: float = Field(default=60.0, gt=0, description="Per-request timeout, seconds.")
    max_attempts: int = Field(default=8, ge=1, description="Attempts per request.")
    backoff_base: float = Field(default=0.5, ge=0, description="First retry delay, seconds.")
    backoff_max: float = Field(default=30.0, ge=0, description="Longest retry delay, seconds.")
    slot_wait_max: float | None = Field(
        default=None, gt=0, description="Give up waiting for a training slot after N seconds."
    )
    max_consecutive_stale: int = Field(
        default=20, ge=1, description="Give up after N too_stale rejections in a row."
    )
    token_refresh_margin: float = Field(
        default=30.0, ge=0, description="Refresh an access token this many seconds early."
    )

    output: OutputMode = Field(
        default="human", description="human: progress bars; quiet: errors only; json: events."
    )

    @field_validator("state_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("keyauth_url", "server_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")
