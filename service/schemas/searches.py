"""What the API answers about searches and trials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from ranktune.service.schemas.common import PublicModel, ReadJson

SearchState = Literal["running", "finished", "cancelled", "failed"]
TrialState = Literal["queued", "running", "succeeded", "failed", "pruned", "cancelled"]


class TrialCounts(PublicModel):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    pruned: int = 0
    cancelled: int = 0


class SearchPublic(PublicModel):
    id: int
    name: str
    state: SearchState
    model: str
    task: str
    strategy: str
    spec: Annotated[dict[str, Any], ReadJson] = Field(
        description="The submitted spec with every default filled in"
    )
    budget_params: int
    budget_rank: int | None
    site_count: int = Field(description="Adapter sites the model has (before tower selection)")
    max_trials: int
    parallelism: int
    trials: TrialCounts
    best_trial_id: int | None
    best_objective: float | None = Field(
        description="The confirmed winner's mean once confirmed, else the best succeeded proxy trial's"
    )
    performance_model: Annotated[dict[str, Any] | None, ReadJson] = Field(
        default=None,
        description="Latest refit: trials, cross-validated spearman and mae, points (predicted vs actual)",
    )
    result: Annotated[dict[str, Any] | None, ReadJson] = Field(
        default=None,
        description="Confirmation: winner and uniform (mean, std, seeds, se), gain, paired (the winner's "
        "gain over uniform paired by seed and example: gain, se, 95% ci, seeds, examples, verdict), "
        "confirmed",
    )
    reason: str | None
    created_at: datetime
    finished_at: datetime | None


class SearchList(PublicModel):
    searches: list[SearchPublic]


class TrialPublic(PublicModel):
    id: int
    search_id: int
    number: int
    kind: Literal["proxy", "probe", "confirm"]
    confirms: int | None = Field(default=None, description="For a confirm trial: the proxy trial it re-runs")
    rung: int = Field(default=0, description="Multi-fidelity searches: the rung it trains at (0: the lowest)")
    config: int | None = Field(
        default=None,
        description="A promoted trial: the number of the rung-0 trial whose schedule it goes on with",
    )
    steps: int | None = Field(default=None, description="Its rung's training steps; None: the spec's length")
    resumed_from: int | None = Field(
        default=None,
        description="A promotion that went on from its rung below's training state: the step it started "
        "at (it trained steps - resumed_from); None: from the start",
    )
    state: TrialState
    attempt: int
    max_attempts: int
    parameter_count: int
    proxy_seed: int
    objective: float | None
    predicted: float | None = Field(default=None, description="The performance model's guess when proposed")
    metrics: Annotated[dict[str, Any] | None, ReadJson]
    curve: Annotated[list[Any] | None, ReadJson]
    timeline: Annotated[list[Any] | None, ReadJson] = Field(
        default=None, description="Schedule changes during training"
    )
    step: int | None
    total_steps: int | None
    trainable_params: int | None
    adapter_params: int | None
    exported_params: int | None = Field(
        default=None, description="Parameters in the written adapter (DMLoRA: after pruning branches)"
    )
    wall_time_s: float | None
    peak_memory_bytes: int | None
    device: str | None
    worker_name: str | None
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    schedule: Annotated[dict[str, Any] | None, ReadJson] = Field(
        description="RankSchedule JSON; omitted in lists unless asked"
    )


class TrialList(PublicModel):
    trials: list[TrialPublic]


class Objective(PublicModel):
    metric: str
    direction: Literal["maximize", "minimize"]


class BestTrial(PublicModel):
    search_id: int
    search_state: SearchState
    objective: Objective
    trial: TrialPublic
    confirmation: str | None = Field(
        default=None,
        description="Once confirmed: the gain over uniform with its 95% interval and verdict, in words "
        "(the figures are in the search's result.paired)",
    )


class StoredAdapter(PublicModel):
    trial_id: int
    confirm_seed: int
    objective: float | None
    size_bytes: int
    sha256: str
    url: str = Field(description="GET it for a zip of adapter_config.json and adapter_model.safetensors")


class PeftExport(PublicModel):
    search_id: int
    trial_id: int
    trial_number: int
    objective: float | None
    peft_config: dict[str, Any] = Field(description="peft.LoraConfig(**peft_config without peft_type)")
    adapter: StoredAdapter | None = Field(
        default=None,
        description="The trained weights of the winner's best confirmation run, when a worker uploaded "
        "them; fetch them from url. None: only the schedule is known (train it with `ranktune train`)",
    )
