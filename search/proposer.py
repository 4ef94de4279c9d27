"""The proposer contract: given a frozen search and its frozen trial history, choose the next schedule.

The contract (the same for every strategy, so "tpe" and "perfmodel" plug in beside these two):

- A ``Proposer`` receives a ``SearchContext`` (the space, the strategy's seed, the objective) and
  a tuple of ``TrialRecord`` (every trial created so far, finished or not, oldest first). Both are
  frozen: a proposer never mutates them and never touches a database or the network.
- ``propose`` returns one ``Proposal``: a schedule inside the space's budget band and the seed the
  proxy fine-tune must use. It is called with the search row locked, once per new trial, so it
  must be quick (milliseconds) and deterministic for the same inputs.
- Trial 0 is always the uniform baseline; ``strategies.propose_next`` enforces that before delegating, so a
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

from ranktune.search.fidelity import Fidelity
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace

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
    rung: int = 0  # multi-fidelity searches: the rung it trains at (search.fidelity)
    config: int | None = None  # the number of the rung-0 trial whose schedule it continues; None: its own
    steps: int | None = None  # the steps it trains, when the search's fidelity sets them

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "pruned", "cancelled")

    @property
    def config_number(self) -> int:
        """The schedule's identity across rungs: the number of the trial that started it at rung 0."""
        return self.number if self.config is None else self.config


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
    fidelity: Fidelity | None = None  # rungs of successive halving; None: every trial at one length
    # The importance probe's finding (search.probe): site name -> importance per unit of rank.
    importance: Mapping[str, float] | None = None
    screen: bool = False  # propose the coarse shapes first (search.screening)


@dataclass(frozen=True)
class Proposal:
    schedule: RankSchedule
    proxy_seed: int
    vector: tuple[float, ...] | None = None
    predicted: float | None = None  # the performance model's prediction of the objective
    quality: Any = None  # a search.perfmodel.ModelQuality when this proposal refitted the model
    rung: int = 0  # multi-fidelity: the rung it trains at; above 0 it is a promotion
    config: int | None = None  # a promotion: the number of the trial that started the schedule
    steps: int | None = None  # multi-fidelity: the steps of its rung


class Proposer(ABC):
    """Chooses trial ``number``'s schedule from the search and its history."""

    name: ClassVar[str]
    uses_history: ClassVar[bool] = True

    @abstractmethod
    def propose(self, context: SearchContext, number: int, trials: tuple[TrialRecord, ...]) -> Proposal:
        """The proposal for trial ``number`` (>= 1); ``trials`` holds trials 0 … number-1."""

    def promotion_scores(
        self, context: SearchContext, trials: tuple[TrialRecord, ...], rung: int
    ) -> Mapping[int, float] | None:
        """Multi-fidelity: a score per config that finished ``rung`` (higher goes up first), or None to
        rank them by their own gain over uniform at that rung (``search.fidelity``)."""
        return None
