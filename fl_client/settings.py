"""``ClientSettings``: every knob of the hospital client, from ``FLCLIENT_*`` or the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, JsonValue, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ClientSettings", "OutputMode"]

OutputMode = Literal["human", "quiet", "json"]


class ClientSettings(BaseSettings):
    """Settings of one hospital client; environment variables are ``FLCLIENT_<NAME>``.

    Only what is this hospital's own is a setting: its state directory, its data, its
    machine's resources, how it reaches the services and when it stops taking part.
    Everything the hospitals share (the model, its initialization, local training, what
    goes on the wire, the data schema) is the job's study spec; the CKKS profile comes
    with the job's key epoch.
    """

    model_config = SettingsConfigDict(env_prefix="FLCLIENT_", extra="forbid")

    # where things live
    state_dir: Path = Field(
        default=Path("~/.hefl-client"),
        description="Local directory for the credential, secret contexts and, per job, "
        "the update journal, model cache and preprocessing; created 0700, files 0600.",
    )
    keyauth_url: str = Field(default="http://127.0.0.1:8700", description="Key authority.")
    server_url: str = Field(default="http://127.0.0.1:8800", description="Aggregation server.")
    allow_insecure_http: bool = Field(
        default=False,
        description="Allow plain http:// to a non-loopback host. Clients share one key per "
        "epoch, so without TLS any client could decrypt another's upload.",
    )

    # this hospital's job and data
    job: str | None = Field(default=None, description="The job (study) to train, by name.")
    data: str | None = Field(
        default=None,
        description="This hospital's data: a .csv or .parquet table (a study with features), "
        "or for a study with data.input_shape a data factory 'pkg.mod:factory' returning "
        "fl_client.ClientData, or a bundled dataset (heart-disease, digits, breast-cancer).",
    )
    site: str | None = Field(
        default=None,
        description="Passed to a data factory as site=...: a bundled dataset's site "
        "(heart-disease: cleveland, hungary, switzerland, va-long-beach; digits and "
        "breast-cancer: 0..n_sites-1).",
    )
    data_args: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="Keyword arguments of a data factory (--data-arg KEY=VALUE), e.g. a "
        "file's path or a bundled dataset's n_sites, alpha, seed, test_fraction.",
    )

    # this machine's resources
    threads: int | None = Field(
        default=None, ge=1, description="Threads torch may use (torch.set_num_threads)."
    )
    step_delay: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="Seconds slept after each local optimizer step: simulates a slower "
        "hospital machine (demo and benchmarks).",
    )

    # stop conditions
    max_rounds: int | None = Field(
        default=None, ge=1, description="Stop taking part after N acknowledged updates."
    )
    max_duration: float | None = Field(
        default=None, gt=0, description="Stop taking part after N seconds."
    )

    # network behaviour
    timeout: float = Field(default=60.0, gt=0, description="Per-request timeout, seconds.")
    max_attempts: int = Field(default=8, ge=1, description="Attempts per request.")
    backoff_base: float = Field(default=0.5, ge=0, description="First retry delay, seconds.")
    backoff_max: float = Field(default=30.0, ge=0, description="Longest retry delay, seconds.")
    round_requests: Literal["one", "combined", "separate"] = Field(
        default="one",
        description="one: one request per update in steady state (the update's answer "
        "carries the next round's lease and model; where the server answers without them, "
        "the next round takes its lease as combined does); combined: two requests per "
        "update (the pull takes the training slot, the update carries the metrics); "
        "separate: the six of older servers (job, slot, model, update, slot release, "
        "metrics), for comparison. A server without the combined path gets separate "
        "requests anyway.",
    )
    slot_wait_max: float | None = Field(
        default=None, gt=0, description="Give up waiting for a training slot after N seconds."
    )
    integrity_poll: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between looks at a job whose model failed a check, while the "
        "server locates and removes the bad update (and probes this hospital), and at a job "
        "moving to a new key epoch.",
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
