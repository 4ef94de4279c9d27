"""Proposers: given a frozen search and its frozen trial history, choose the next schedule to try.

The contract (the same for every strategy, so "tpe" and "perfmodel" plug in beside these two):

- A ``Proposer`` receives a ``SearchContext`` (the space, the strategy's seed, the objective) and
  a tuple of ``TrialRecord`` (every trial created so far, finished or not, oldest first). Both are
  frozen: a proposer never mutates them and never touches a database or the network.
- ``propose`` returns one ``Proposal``: a schedule inside the space's budget band and the seed the
  proxy fine-tune must use. It is called with the search row locked, once per new trial, so it
  must be quick (milliseconds) and deterministic for the same inputs.
- Trial 0 is always the uniform baseline; ``propose_next`` enforces that before delegating, so a
  strategy only ever sees numbers >= 1.
- A proposer raises ``search.errors.RanktuneError`` for a problem a user can fix; anything else
  is a bug.
- A proposer that sets ``uses_history = False`` receives an empty ``trials`` tuple: the service
  then skips decoding every past schedule (which grows with the search) under the search's lock.
- Instances hold no state between calls: the service builds one per call, possibly in another
  process than the last one. Anything a strategy learns must be recomputed from ``trials``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from search.errors import RanktuneError
from search.schedule import RankSchedule
from search.space import HierarchicalSpace

TrialState = Literal["queued", "running", "succeeded", "failed", "pruned", "cancelled"]
Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial as a proposer sees it: what was tried and, once finished, how it did."""

    number: int
    state: TrialState
    schedule: RankSchedule
    proxy_seed: int
    objective: float | None = None  # the objective metric of a succeeded (or pruned: last) trial
    metrics: Mapping[str, float] = field(default_factory=dict)
    vector: tuple[float, ...] | None = None  # the hierarchical vector it came from, if any

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "pruned", "cancelled")


@dataclass(frozen=True)
class PriorTrial:
    """A finished trial of an earlier search on the same model and task (transfer)."""

    schedule: RankSchedule
    objective: float
    baseline: float  # that search's uniform-baseline objective: gains are what transfers


@dataclass(frozen=True)
class ModelSettings:
    """How the ``perfmodel`` strategy screens candidates (the spec's ``performance_model``)."""

    min_trials: int = 8  # succeeded trials (own + transferred) before the model takes over from TPE
    pool: int = 16  # candidates screened per proposal (TPE's first; see search.engine)
    acquisition: Literal["ucb", "ei"] = "ucb"
    kappa: float = 0.25  # UCB's exploration weight (bootstrap spreads on few trials are wide)
    transfer: bool = True


@dataclass(frozen=True)
class SearchContext:
    """The frozen part of a search a proposer may read."""

    space: HierarchicalSpace
    seed: int = 0
    metric: str = "accuracy"
    direction: Direction = "maximize"
    max_trials: int = 1
    model: ModelSettings = field(default_factory=ModelSettings)
    prior: tuple[PriorTrial, ...] = ()


@dataclass(frozen=True)
class Proposal:
    schedule: RankSchedule
    proxy_seed: int
    vector: tuple[float, ...] | None = None
    predicted: float | None = None  # the performance model's prediction of the objective
    quality: Any = None  # a search.perfmodel.ModelQuality when this proposal refitted the model


class Proposer(ABC):
    """Chooses trial ``number``'s schedule from the search and its history."""

    name: ClassVar[str]
    uses_history: ClassVar[bool] = True

    @abstractmethod
    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        """The proposal for trial ``number`` (>= 1); ``trials`` holds trials 0 … number-1."""


class UniformProposer(Proposer):
    """The uniform baseline again, with a fresh proxy seed: measures seed noise, not schedules."""

    name = "uniform"
    uses_history = False

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        return Proposal(context.space.uniform(), context.seed + number, tuple(context.space.uniform_vector()))


class RandomProposer(Proposer):
    """A random hierarchical vector per trial; every trial trains with the same proxy seed.

    The generator is seeded with the pair (search seed, trial number), so searches with seeds 0 and 1
    draw independent vectors (a plain ``seed + number`` would give them 31 of 32 vectors in common)."""

    name = "random"
    uses_history = False

    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        vector = context.space.random_vector(np.random.default_rng((context.seed, number)))
        return Proposal(context.space.to_schedule(vector), context.seed, tuple(vector))


PROPOSERS: dict[str, type[Proposer]] = {p.name: p for p in (UniformProposer, RandomProposer)}


def register(proposer: type[Proposer]) -> type[Proposer]:
    """Make a strategy available by its ``name`` (usable as a class decorator)."""
    PROPOSERS[proposer.name] = proposer
    return proposer


def _load_builtin() -> None:
    import search.engine  # noqa: F401  (registers "tpe" and "perfmodel")


def strategy_names() -> tuple[str, ...]:
    _load_builtin()
    return tuple(sorted(PROPOSERS))


def get_proposer(strategy: str) -> Proposer:
    _load_builtin()
    try:
        return PROPOSERS[strategy]()
    except KeyError:
        raise RanktuneError(
            f"strategy: {strategy!r} is not one of {', '.join(strategy_names())}", field="strategy"
        ) from None


def propose_next(
    proposer: Proposer, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]
) -> Proposal:
    """Trial 0 is the uniform baseline with the search's seed; later trials follow the strategy."""
    if number == 0:
        return Proposal(context.space.uniform(), context.seed, tuple(context.space.uniform_vector()))
    return proposer.propose(context, number, trials)
