"""The one place configuration comes from: environment variables ``RANKTUNE_*``."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

OpenPolicy = Literal["never", "until_first_token", "always"]


def default_database_url() -> str:
    """The embedded SQLite database under the user's data directory."""
    from platformdirs import user_data_dir

    return f"sqlite:///{Path(user_data_dir('ranktune')) / 'ranktune.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RANKTUNE_", extra="ignore")

    database_url: str = Field(default_factory=default_database_url)
    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=0, le=65535)
    reap_interval_s: float = Field(
        default=0.5,
        ge=0.0,
        description="Seconds between expired-lease sweeps: a lease is requeued within this plus one "
        "sweep of its expiry (a sweep that finds nothing is one indexed query); 0 = off",
    )
    top_up_interval_s: float = Field(
        default=1.0,
        ge=0.0,
        description="Seconds between background top-ups that propose trials until each running search "
        "has parallelism queued or running; 0 = off (submissions, results and claims still propose some)",
    )
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    lease_ttl_s: float = Field(default=120.0, gt=0, description="Default lease lifetime of a search")
    idle_retry_after_s: int = Field(default=2, ge=1, description="Retry-After when no trial is queued")
    request_threads: int = Field(
        default=40, ge=1, le=1000, description="Threads serving requests at once (the database work)"
    )
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    api_workers: int = Field(
        default=1, ge=1, le=64, description="uvicorn worker processes of `ranktune serve` (each its own GIL)"
    )
    auth_cache_s: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="Seconds a token's principal is reused before it is looked up again; 0 = always. "
        "A token revoked by another process stops working within this time (at once in this process)",
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=1000, description="Database connections kept open per API process"
    )
    db_max_overflow: int = Field(
        default=20, ge=0, le=1000, description="Extra connections an API process may open under load"
    )
    db_ping_after_idle_s: float = Field(
        default=10.0,
        ge=0.0,
        description="Test a pooled connection before use when it sat idle this long; 0 = test every time",
    )
    max_body_bytes: int = Field(
        default=16 * 2**20,
        ge=1024,
        description="Largest request body accepted; a larger one is a 413 before it is read",
    )
    max_adapter_bytes: int = Field(
        default=256 * 2**20,
        ge=1024,
        description="Largest trained adapter (a zip of PEFT's files) a worker may upload for a "
        "confirmation run; a larger one is a 413 and the search keeps only its schedule",
    )
    max_json_field_bytes: int = Field(
        default=2**20,
        ge=1024,
        description="Largest serialized free-form JSON field (method options, site_stats, timeline, "
        "metrics, measurements); a larger one is a 422 naming the field",
    )
    open_mode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Requests without a token on a loopback host: auto = served as admin until the first "
        "token is created (revoking tokens never reopens it), on = always served, off = never. "
        "Never on any other host",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_default_database(self) -> bool:
        return self.database_url == default_database_url()

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def open_policy(self) -> OpenPolicy:
        """When a request without a token is served (as admin)."""
        if not self.is_loopback or self.open_mode == "off":
            return "never"
        return "always" if self.open_mode == "on" else "until_first_token"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]
