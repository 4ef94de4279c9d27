"""The lease protocol's bodies: claim, heartbeat, complete, fail."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from ranktune.search.paired import OutcomesError, decode_outcomes
from ranktune.service.schemas.common import FiniteJson, Name, PublicModel, StrictModel
from ranktune.service.schemas.searches import TrialPublic

Attempt = Annotated[int, Field(ge=1, le=1_000)]


class WorkerInfo(StrictModel):
    name: Name
    device: str = Field(min_length=1, max_length=100)
    hostname: str = Field(min_length=1, max_length=255)


class ClaimRequest(StrictModel):
    worker: WorkerInfo


class Job(BaseModel):
    """Everything a worker needs to run one trial attempt."""

    lease_id: str
    trial_id: int
    search_id: int
    trial_number: int
    kind: str = Field(default="proxy", description="proxy, or confirm (a full-length re-run)")
    eval_split: str = Field(default="val", description="val for proxy trials; test (held out) for confirm")
    attempt: int
    model: str
    task: str
    method: dict[str, Any]
    schedule: dict[str, Any] = Field(description="RankSchedule.to_json()")
    proxy: dict[str, Any] = Field(description="steps, lr, batch_size, seed (this trial's), eval_every")
    objective: dict[str, Any]
    dynamic: dict[str, Any] | None = Field(
        default=None, description='{"at": [fractions]}: send site_stats at these fractions of the steps'
    )
    heartbeat_interval_s: float
    expires_at: datetime


class MeasurementIn(StrictModel):
    step: int = Field(ge=0)
    loss: float | None = None
    metric: float | None = None


class HeartbeatRequest(StrictModel):
    attempt: Attempt
    step: int = Field(ge=0)
    total_steps: int | None = Field(default=None, ge=1)
    measurements: list[MeasurementIn] = Field(default_factory=list, max_length=10_000)
    site_stats: dict[str, FiniteJson] | None = None


class HeartbeatResponse(BaseModel):
    action: Literal["continue", "stop", "resize"]
    expires_at: datetime | None
    schedule: dict[str, Any] | None = Field(default=None, description="The new schedule when resizing")
    reason: str | None = None


class CompleteRequest(StrictModel):
    attempt: Attempt
    metrics: dict[str, float] = Field(min_length=1)
    curve: list[MeasurementIn] = Field(default_factory=list, max_length=100_000)
    trainable_params: int | None = Field(default=None, ge=0)
    adapter_params: int | None = Field(default=None, ge=0)
    wall_time_s: float | None = Field(default=None, ge=0.0)
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    device: str | None = Field(default=None, max_length=100)
    timeline: list[FiniteJson] = Field(default_factory=list, max_length=100_000)
    outcomes: str | None = Field(
        default=None,
        max_length=200_000,
        description="Per-example 0/1 outcomes of the final evaluation, '<examples>:<base64 of packed bits>'",
    )

    @field_validator("outcomes")
    @classmethod
    def outcomes_decode(cls, outcomes: str | None) -> str | None:
        if outcomes is not None:
            try:
                decode_outcomes(outcomes)
            except OutcomesError as e:
                raise ValueError(str(e).removeprefix("outcomes: ")) from None
        return outcomes

    @field_validator("metrics")
    @classmethod
    def metric_names(cls, metrics: dict[str, float]) -> dict[str, float]:
        for name in metrics:
            if not name or len(name) > 100:
                raise ValueError("metrics: names must have 1 to 100 characters")
        return metrics


class FailRequest(StrictModel):
    attempt: Attempt
    reason: str = Field(min_length=1, max_length=10_000)
    retryable: bool = False


class ResultResponse(PublicModel):
    """The trial after a complete or fail; ``requeued`` when a retryable failure queued it again."""

    trial: TrialPublic
    search_state: str
    requeued: bool = False
