"""The schema, as typed SQLAlchemy 2 models. Only Alembic migrations change the real schema.

States are short strings checked by the code that writes them (``TRIAL_STATES`` …), not database
enums: adding a state later is then a code change, not a type migration on every backend.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, LargeBinary, MetaData, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ranktune.service.db.types import UTCDateTime, utcnow

SEARCH_STATES = ("running", "finished", "cancelled", "failed")
TRIAL_STATES = ("queued", "running", "succeeded", "failed", "pruned", "cancelled")
TERMINAL_TRIAL_STATES = ("succeeded", "failed", "pruned", "cancelled")
LEASE_STATES = ("active", "completed", "failed", "expired", "stopped")
ROLES = ("admin", "user", "worker")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Search(Base):
    __tablename__ = "searches"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]  # the validated SearchSpec, defaults filled in
    state: Mapped[str] = mapped_column(String(16), default="running", index=True)
    sites: Mapped[list[Any]]  # AdapterSite.to_json() of every site the model has
    strategy: Mapped[str] = mapped_column(String(40))
    budget_params: Mapped[int] = mapped_column(BigInteger)
    budget_rank: Mapped[int | None]
    max_trials: Mapped[int]
    parallelism: Mapped[int]
    max_attempts: Mapped[int]
    lease_ttl_s: Mapped[float] = mapped_column(Float)
    objective_metric: Mapped[str] = mapped_column(String(100))
    objective_direction: Mapped[str] = mapped_column(String(8))
    trials_created: Mapped[int] = mapped_column(default=0)
    # Where the next trial it queues goes in the fair-share claim order (service.db.fair_share).
    next_claim_order: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # No foreign key: searches and trials would reference each other, and the search row is
    # written (and locked) before its trials exist.
    best_trial_id: Mapped[int | None]
    result: Mapped[dict[str, Any] | None]  # the confirmed winner against uniform (confirmation phase)
    performance_model: Mapped[dict[str, Any] | None]  # quality of the latest refit: Spearman, MAE, points
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Trial(Base):
    __tablename__ = "trials"
    __table_args__ = (
        Unique("search_id", "number"),
        Index("ix_trials_claim", "state", "claim_order", "id"),  # the claim: lowest claim order first
        Index("ix_trials_search_state", "search_id", "state"),  # top-up counts per search
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("searches.id", ondelete="CASCADE"))
    number: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16), default="proxy", server_default="proxy")
    state: Mapped[str] = mapped_column(String(16), default="queued")
    schedule: Mapped[dict[str, Any]]  # RankSchedule.to_json()
    vector: Mapped[list[Any] | None]  # the hierarchical search vector it was projected from, if any
    predicted: Mapped[float | None] = mapped_column(Float)  # performance model's guess when proposed
    confirms: Mapped[int | None]  # for kind "confirm": the number of the proxy trial it re-runs
    # Multi-fidelity searches (spec ``fidelity``): the rung it trains at, the number of the rung-0
    # trial whose schedule it continues (None: its own), and its rung's steps (None: the spec's).
    rung: Mapped[int] = mapped_column(default=0, server_default="0")
    config: Mapped[int | None]
    steps: Mapped[int | None]
    resumed_from: Mapped[int | None]  # the step it went on from (a promotion resumed from its rung below)
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    proxy_seed: Mapped[int]
    attempt: Mapped[int] = mapped_column(default=0)  # claims so far; the running attempt's number
    # Its place in the fair-share order claims follow (service.db.fair_share); ties go to the oldest.
    claim_order: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    max_attempts: Mapped[int]
    objective: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None]
    curve: Mapped[list[Any] | None]
    timeline: Mapped[list[Any] | None]
    site_stats: Mapped[dict[str, Any] | None]
    outcomes: Mapped[str | None] = mapped_column(Text)  # search.paired.encode_outcomes of the last evaluation
    step: Mapped[int | None]
    total_steps: Mapped[int | None]
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    adapter_params: Mapped[int | None] = mapped_column(BigInteger)
    # What the written adapter holds (DMLoRA prunes branches: fewer than adapter_params, trained).
    exported_params: Mapped[int | None] = mapped_column(BigInteger)
    wall_time_s: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    device: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    worker_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Lease(Base):
    __tablename__ = "leases"
    __table_args__ = (
        Unique("trial_id", "attempt"),
        Index("ix_leases_state_expires_at", "state", "expires_at"),  # the reaper's sweep
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4, unguessable
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class TrialAdapter(Base):
    """The trained adapter of a confirmation run, as the worker uploaded it: a zip of PEFT's
    ``adapter_config.json`` and ``adapter_model.safetensors``. Once a search is confirmed only its
    winner's best run keeps one (``repository.adapters``)."""

    __tablename__ = "trial_adapters"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int]
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialCheckpoint(Base):
    """A multi-fidelity rung's training state (``trainer.resume``), as its worker uploaded it, so the
    schedule's promotion to the next rung goes on from it instead of starting over. Deleted when the
    search ends."""

    __tablename__ = "trial_checkpoints"

    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int]
    steps: Mapped[int]  # the optimizer steps it holds (the rung's length)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Measurement(Base):
    __tablename__ = "measurements"
    __table_args__ = (Unique("trial_id", "attempt", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    step: Mapped[int]
    loss: Mapped[float | None] = mapped_column(Float)
    metric: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    device: Mapped[str] = mapped_column(String(100))
    hostname: Mapped[str] = mapped_column(String(255))
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    current_trial_id: Mapped[int | None]
    trials_done: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
