"""The search spec a user submits. Every level forbids unknown fields, so a typo is a 422 naming it."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ranktune.search.errors import GridError
from ranktune.search.fidelity import Fidelity, FidelityError
from ranktune.search.grid import DEFAULT_GRID, RankGrid
from ranktune.search.sites import Tower
from ranktune.search.strategies import strategy_names
from ranktune.service.schemas.common import JsonObject, Name, StrictModel

Spec = Annotated[str, Field(min_length=1, max_length=500)]


class MethodSpec(StrictModel):
    kind: Literal["lora", "dmlora"] = "lora"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    dmlora: JsonObject = Field(default_factory=dict, description="DMLoRA options, checked by the trainer")

    @model_validator(mode="after")
    def dmlora_options_need_dmlora(self) -> Self:
        if self.dmlora and self.kind != "dmlora":
            raise ValueError("method.dmlora: options are only allowed with kind 'dmlora'")
        return self


class BudgetSpec(StrictModel):
    """Exactly one: uniform rank ``rank`` on the searched sites, or an absolute ``params`` count."""

    rank: int | None = Field(default=None, ge=1, le=4096)
    params: int | None = Field(default=None, ge=1, le=10**12)

    @model_validator(mode="after")
    def exactly_one(self) -> Self:
        if (self.rank is None) == (self.params is None):
            raise ValueError('budget: give exactly one of {"rank": R} or {"params": N}')
        return self


class SpaceSpec(StrictModel):
    grid: list[int] = Field(default_factory=lambda: list(DEFAULT_GRID), min_length=1, max_length=64)
    towers: list[Tower] | None = Field(default=None, min_length=1, description="None: every tower")
    layer_groups: int = Field(default=4, ge=1, le=64)

    @field_validator("grid")
    @classmethod
    def grid_is_valid(cls, grid: list[int]) -> list[int]:
        try:
            return list(RankGrid(tuple(grid)).values)
        except GridError as e:
            raise ValueError(str(e)) from None

    @field_validator("towers")
    @classmethod
    def towers_unique(cls, towers: list[Tower] | None) -> list[Tower] | None:
        if towers is not None and len(set(towers)) != len(towers):
            raise ValueError("space.towers: a tower is listed twice")
        return towers


class ProxySpec(StrictModel):
    steps: int = Field(default=200, ge=1, le=1_000_000, description="Optimizer steps per proxy trial")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    batch_size: int = Field(default=32, ge=1, le=65_536, description="Examples per micro-batch")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    eval_every: int = Field(default=50, ge=0, le=1_000_000)
    grad_accum_steps: int = Field(
        default=1, ge=1, le=4_096,
        description="Micro-batches whose gradients make one optimizer step: the effective batch is "
        "batch_size x grad_accum_steps; steps still counts optimizer steps",
    )  # fmt: skip
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass (transformers' own, non-reentrant): "
        "less memory, one more forward pass of each block; the model's class must support it",
    )
    max_seq_len: int | None = Field(
        default=None, ge=1, le=1_048_576,
        description="Cut tokenized text at this many tokens (causal-LM and text-classification tasks; "
        "at most the model's positions). Unset: the task's default",
    )  # fmt: skip
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast on a CUDA device that supports it, fp32 elsewhere; fp32; bf16 "
        "(autocast on CUDA or CPU; a CUDA device without bfloat16 fails the trial)",
    )


# Added after workers shipped: a job carries them only when set, so older workers run other searches.
PROXY_OPTIONS_SENT_WHEN_SET = ("grad_accum_steps", "gradient_checkpointing", "max_seq_len", "precision")


class ObjectiveSpec(StrictModel):
    metric: str = Field(default="accuracy", pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,99}$")
    direction: Literal["maximize", "minimize"] = "maximize"


class PrunerSpec(StrictModel):
    """Stops unpromising proxy trials from their intermediate measurements (Optuna's pruners)."""

    kind: Literal["none", "median", "halving"] = "none"
    startup_trials: int = Field(default=5, ge=0, le=10_000, description="median: finished trials first")
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000, description="median: never prune before")


class PerformanceModelSpec(StrictModel):
    """The ``perfmodel`` strategy's LightGBM screening."""

    min_trials: int = Field(default=8, ge=2, le=10_000, description="Succeeded trials before it takes over")
    pool: int = Field(
        default=16, ge=1, le=100_000, description="Candidates per proposal: 16 from TPE, then mutations"
    )
    acquisition: Literal["ucb", "ei"] = "ucb"
    kappa: float = Field(default=0.25, ge=0.0, le=100.0, description="UCB's exploration weight")
    transfer: bool = Field(default=True, description="Warm-start on earlier searches of the same model+task")


class DynamicSpec(StrictModel):
    """Re-allocate ranks during each proxy trial at these fractions of its steps."""

    at: list[float] = Field(min_length=1, max_length=16)

    @field_validator("at")
    @classmethod
    def increasing_fractions(cls, at: list[float]) -> list[float]:
        if any(not 0.0 < a < 1.0 for a in at):
            raise ValueError("dynamic.at: every fraction must lie strictly between 0 and 1")
        if any(b <= a for a, b in itertools.pairwise(at)):
            raise ValueError("dynamic.at: fractions must be strictly increasing")
        return at


DEFAULT_RECHECK = 3  # the measured recipe (README: confirm): one proxy run's luck does not pick the winner


class ConfirmSpec(StrictModel):
    """Re-run the best schedules and the uniform baseline at full length with several seeds."""

    top_k: int = Field(default=3, ge=1, le=100)
    steps: int = Field(default=1000, ge=1, le=1_000_000)
    seeds: int = Field(default=3, ge=1, le=100)
    recheck: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="First train the best this-many proxy schedules once more at their proxy length with "
        f"another seed; confirmation then ranks schedules by the mean of their proxy runs (0: off; "
        f"default {DEFAULT_RECHECK})",
    )

    def rechecks(self) -> int:
        return self.recheck or 0


CASCADE = "cascade"  # the strategy that brings its own fidelity and probe (search.engine.CascadeProposer)
SCREENED_BY_DEFAULT = ("perfmodel", CASCADE)  # strategies whose searches screen shapes unless told not to


class FidelitySpec(StrictModel):
    """Successive halving over training lengths (ASHA): rungs at min_steps x eta^k up to max_steps."""

    min_steps: int = Field(
        ge=1, le=1_000_000, description="Steps of the lowest rung, where every schedule starts"
    )
    max_steps: int = Field(ge=1, le=1_000_000, description="Steps of the top rung")
    eta: int = Field(default=3, ge=2, le=16, description="1/eta of a rung's schedules go up to the next one")
    resume: bool = Field(
        default=True,
        description="A promotion goes on from its rung's training state (adapters and optimizer, uploaded "
        "by the worker) and trains only the steps the next rung adds; LoRA without dynamic mode only",
    )

    @model_validator(mode="after")
    def rungs_exist(self) -> Self:
        try:
            self.rungs()
        except FidelityError as e:
            raise ValueError(str(e)) from None
        return self

    def rungs(self) -> Fidelity:
        return Fidelity(self.min_steps, self.max_steps, self.eta)


class ProbeSpec(StrictModel):
    """One short over-ranked LoRA run at the start that measures per-site importance (search.probe)."""

    steps: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Its length; default: proxy.steps, or with fidelity the second rung's steps",
    )  # fmt: skip

    def length(self, spec: SearchCreate) -> int:
        if self.steps is not None:
            return self.steps
        if spec.fidelity is not None:
            rungs = spec.fidelity.rungs()
            return rungs.steps(min(1, rungs.top))
        return spec.proxy.steps


class SearchCreate(StrictModel):
    name: Name
    model: Spec
    task: Spec
    method: MethodSpec = Field(default_factory=MethodSpec)
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(rank=8))
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    strategy: str = "perfmodel"
    max_trials: int = Field(default=24, ge=1, le=10_000)
    parallelism: int = Field(default=4, ge=1, le=1_024)
    priority: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Share of claims among running searches with queued trials: a search with priority 3 "
        "gets three leases for each one of a priority-1 search (parallelism still caps each)",
    )
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    performance_model: PerformanceModelSpec = Field(default_factory=PerformanceModelSpec)
    dynamic: DynamicSpec | None = None
    fidelity: FidelitySpec | None = Field(
        default=None,
        description="Train schedules at increasing lengths and promote the best 1/eta (ASHA); "
        "max_trials counts every rung's runs. Without it every proxy trial trains proxy.steps",
    )
    probe: ProbeSpec | None = Field(
        default=None,
        description="Lease one importance probe after the uniform baseline (it counts as one of "
        "max_trials); its importance-allocated schedule is proposed next",
    )
    screen: bool | None = Field(
        default=None,
        description="Propose coarse shapes first, one factor at a time, each with the whole budget on "
        "one part: the towers, then attention or MLP within the best part, then its lower or upper "
        "layers; default: on for strategies perfmodel and cascade",
    )
    confirm: ConfirmSpec | None = None
    max_attempts: int = Field(default=3, ge=1, le=100)
    lease_ttl_s: float | None = Field(
        default=None, ge=1.0, le=7 * 86_400, description="Default: the server's RANKTUNE_LEASE_TTL_S"
    )

    @field_validator("strategy")
    @classmethod
    def known_strategy(cls, strategy: str) -> str:
        if strategy not in strategy_names():
            raise ValueError(f"strategy: {strategy!r} is not one of {', '.join(strategy_names())}")
        return strategy

    @field_validator("model", "task")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def one_length_source(self, info: ValidationInfo) -> Self:
        stored = bool(info.context and info.context.get("stored"))  # a stored spec holds every default
        if self.fidelity is not None and "steps" in self.proxy.model_fields_set and not stored:
            raise ValueError(
                "proxy.steps: a search with fidelity trains each rung's steps "
                f"({self.fidelity.min_steps} to {self.fidelity.max_steps}); leave proxy.steps out"
            )
        if self.strategy == CASCADE:  # rungs around the proxy's length, and the probe, unless given
            if self.fidelity is None:
                steps = self.proxy.steps
                self.fidelity = FidelitySpec(min_steps=max(1, steps // 3), max_steps=3 * steps, eta=3)
            if self.probe is None:
                self.probe = ProbeSpec()
        if self.screen is None and self.strategy in SCREENED_BY_DEFAULT and not stored:
            self.screen = True  # the best measured recipe at a tight budget (README: strategy)
        if self.confirm is not None and self.confirm.recheck is None:
            # A search stored before rechecks existed had none; a new one gets the measured default.
            self.confirm.recheck = 0 if stored else DEFAULT_RECHECK
        return self
