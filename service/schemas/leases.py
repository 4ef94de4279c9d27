"""The lease protocol's bodies: claim, heartbeat, complete, fail."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from ranktune.search.paired import OutcomesError, decode_outcomes
from ranktune.service.schemas.common import (
    INT32_MAX,
    NO_NUL,
    PRINTABLE,
    BigCount,
    Count,
    JsonArray,
    JsonObject,
    Name,
    PublicModel,
    ReadJson,
    StrictModel,
)
from ranktune.service.schemas.json_bounds import JSON_SIZE
from ranktune.service.schemas.searches import TrialPublic

Attempt = Annotated[int, Field(ge=1, le=1_000)]
TotalSteps = Annotated[int, Field(ge=1, le=INT32_MAX)]
Device = Annotated[str, Field(min_length=1, max_length=100, pattern=PRINTABLE)]


class WorkerInfo(StrictModel):
    name: Name
    device: Device
    hostname: str = Field(min_length=1, max_length=255, pattern=PRINTABLE)


class ClaimRequest(StrictModel):
    worker: WorkerInfo


class Job(BaseModel):
    """Everything a worker needs to run one trial attempt."""

    lease_id: str
    trial_id: int
    search_id: int
    trial_number: int
    kind: str = Field(
        default="proxy", description="proxy, probe (the importance probe) or confirm (a full-length re-run)"
    )
    eval_split: str = Field(default="val", description="val for proxy trials; test (held out) for confirm")
    attempt: int
    model: str
    task: str
    method: Annotated[dict[str, Any], ReadJson]
    schedule: Annotated[dict[str, Any], ReadJson] = Field(description="RankSchedule.to_json()")
    proxy: dict[str, Any] = Field(
        description="steps, lr, batch_size, seed (this trial's), eval_every; grad_accum_steps, "
        "gradient_checkpointing, max_seq_len and precision only when the search sets them"
    )
    objective: dict[str, Any]
    dynamic: dict[str, Any] | None = Field(
        default=None, description='{"at": [fractions]}: send site_stats at these fractions of the steps'
    )
    upload_adapter: bool = Field(
        default=False,
        description="Upload the trained adapter (PUT /leases/{lease_id}/adapter) before completing: "
        "confirmation runs, whose winner's weights the search exports",
    )
    keep_state: bool = Field(
        default=False,
        description="Upload the training state (PUT /leases/{lease_id}/checkpoint?steps=) before completing: "
        "a rung of a multi-fidelity search whose promotion may go on from it",
    )
    resume: dict[str, Any] | None = Field(
        default=None,
        description='{"steps", "trial_id", "url"}: go on from the rung below\'s training state at "steps" '
        "(GET url) and train only the steps this rung adds; train from the start when it cannot be had",
    )
    heartbeat_interval_s: float
    expires_at: datetime


class MeasurementIn(StrictModel):
    step: Count
    loss: float | None = None
    metric: float | None = None


class HeartbeatRequest(StrictModel):
    attempt: Attempt
    step: Count
    total_steps: TotalSteps | None = None
    measurements: Annotated[list[MeasurementIn], JSON_SIZE] = Field(default_factory=list, max_length=10_000)
    site_stats: JsonObject | None = None


class AdapterStored(BaseModel):
    trial_id: int
    attempt: int
    size_bytes: int
    sha256: str


class CheckpointStored(BaseModel):
    trial_id: int
    attempt: int
    steps: int
    size_bytes: int
    sha256: str


class HeartbeatResponse(BaseModel):
    action: Literal["continue", "stop", "resize"]
    expires_at: datetime | None
    schedule: dict[str, Any] | None = Field(default=None, description="The new schedule when resizing")
    reason: str | None = None


class CompleteRequest(StrictModel):
    attempt: Attempt
    metrics: Annotated[dict[str, float], JSON_SIZE] = Field(min_length=1)
    # Typed points, bounded by count rather than RANKTUNE_MAX_JSON_FIELD_BYTES: a long proxy with a
    # short eval_every legitimately sends megabytes, and a refused result would stay in the spool.
    curve: list[MeasurementIn] = Field(default_factory=list, max_length=100_000)
    trainable_params: BigCount | None = None
    adapter_params: BigCount | None = None
    exported_params: BigCount | None = None
    resumed_from: int | None = Field(
        default=None, ge=1, le=10**9, description="The step it went on from (Job.resume); absent: the start"
    )
    wall_time_s: float | None = Field(default=None, ge=0.0)
    peak_memory_bytes: BigCount | None = Field(
        default=None,
        description="The trial's peak memory: CUDA tensors allocated on its device, or on a Linux CPU the "
        "worker process's peak resident set size during the trial; null when not measured",
    )
    device: str | None = Field(default=None, max_length=100, pattern=NO_NUL)
    timeline: JsonArray = Field(default_factory=list, max_length=100_000)
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
            if not name or len(name) > 100 or not re.fullmatch(PRINTABLE, name):
                raise ValueError("metrics: names must have 1 to 100 characters, none a control character")
        return metrics


class FailRequest(StrictModel):
    attempt: Attempt
    reason: str = Field(min_length=1, max_length=10_000, pattern=NO_NUL)
    retryable: bool = False


class ResultResponse(PublicModel):
    """The trial after a complete or fail; ``requeued`` when a retryable failure queued it again."""

    trial: TrialPublic
    search_state: str
    requeued: bool = False
