"""Rank schedules and parameter budgets: frozen values every other part of ranktune speaks in."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ranktune.search.errors import BudgetError, ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.sites import AdapterSite

BUDGET_FLOOR = 0.97  # a schedule uses between 97% and 100% of its budget


@dataclass(frozen=True)
class AlphaRule:
    """How LoRA's alpha follows a site's rank.

    ``ratio``: alpha = value·r, so the scaling alpha/r is the same ``value`` on every site.
    ``rslora``: alpha = value on every site with rank-stabilised scaling alpha/sqrt(r).
    """

    kind: Literal["ratio", "rslora"] = "ratio"
    value: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in ("ratio", "rslora"):
            raise ScheduleError(f"alpha.kind: must be 'ratio' or 'rslora', got {self.kind!r}", field="alpha")
        if not math.isfinite(self.value) or self.value <= 0:
            raise ScheduleError(f"alpha.value: must be a positive number, got {self.value}", field="alpha")

    def alpha_for(self, rank: int) -> float:
        return self.value * rank if self.kind == "ratio" else self.value

    def scaling_for(self, rank: int) -> float:
        if rank == 0:
            return 0.0
        return self.alpha_for(rank) / (math.sqrt(rank) if self.kind == "rslora" else rank)


@dataclass(frozen=True)
class RankSchedule:
    """Site → rank (0 = no adapter) plus an alpha rule. Hashable, comparable, JSON round-trips."""

    sites: tuple[AdapterSite, ...]
    ranks: tuple[int, ...]
    alpha: AlphaRule = field(default_factory=AlphaRule)

    def __post_init__(self) -> None:
        if len(self.sites) != len(self.ranks):
            raise ScheduleError(f"schedule: {len(self.sites)} sites but {len(self.ranks)} ranks")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ScheduleError("schedule: a site is listed twice")
        for site, rank in zip(self.sites, self.ranks, strict=True):
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
                raise ScheduleError(
                    f"schedule: rank of {site.name} must be a whole number >= 0, got {rank!r}"
                )
            if rank > site.max_rank:
                raise ScheduleError(
                    f"schedule: rank {rank} of {site.name} exceeds min(in, out) = {site.max_rank}"
                )

    @classmethod
    def from_mapping(
        cls, sites: Sequence[AdapterSite], ranks: Mapping[str, int], alpha: AlphaRule | None = None
    ) -> RankSchedule:
        """Ranks by site name; sites missing from ``ranks`` get 0, unknown names are an error."""
        known = {s.name for s in sites}
        unknown = sorted(set(ranks) - known)
        if unknown:
            raise ScheduleError(f"schedule: {unknown[0]!r} is not a site of this model")
        return cls(tuple(sites), tuple(int(ranks.get(s.name, 0)) for s in sites), alpha or AlphaRule())

    @classmethod
    def uniform(
        cls,
        sites: Sequence[AdapterSite],
        rank: int,
        grid: RankGrid | None = None,
        alpha: AlphaRule | None = None,
    ) -> RankSchedule:
        """Rank ``rank`` everywhere, capped per site at the largest allowed rank ≤ min(in, out)."""
        grid = grid or RankGrid()
        ranks = tuple(min(rank, grid.largest_at_most(s.max_rank)) for s in sites)
        return cls(tuple(sites), ranks, alpha or AlphaRule())

    @property
    def parameter_count(self) -> int:
        """Trainable LoRA parameters: r·(in + out) per site (DMLoRA's branches sum to the same)."""
        return sum(r * s.params_per_rank for s, r in zip(self.sites, self.ranks, strict=True))

    def as_dict(self) -> dict[str, int]:
        return {s.name: r for s, r in zip(self.sites, self.ranks, strict=True)}

    def rank_of(self, name: str) -> int:
        for site, rank in zip(self.sites, self.ranks, strict=True):
            if site.name == name:
                return rank
        raise ScheduleError(f"schedule: {name!r} is not a site of this schedule")

    def active(self) -> Iterable[tuple[AdapterSite, int]]:
        """The sites that carry an adapter, with their ranks."""
        return ((s, r) for s, r in zip(self.sites, self.ranks, strict=True) if r > 0)

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": {"kind": self.alpha.kind, "value": self.alpha.value},
            "parameter_count": self.parameter_count,
            "sites": [{**s.to_json(), "rank": r} for s, r in zip(self.sites, self.ranks, strict=True)],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RankSchedule:
        try:
            records = data["sites"]
            alpha = AlphaRule(**data.get("alpha", {}))
            sites = tuple(AdapterSite.from_json(r) for r in records)
            ranks = tuple(r["rank"] for r in records)
        except (KeyError, TypeError) as e:
            raise ScheduleError(f"schedule: malformed schedule JSON ({e})") from e
        return cls(sites, ranks, alpha)


@dataclass(frozen=True)
class Budget:
    """A trainable-parameter budget: schedules stay within [97%, 100%] of ``params``."""

    params: int
    uniform_rank: int | None = None  # set when the budget is "uniform rank r on the searched sites"

    def __post_init__(self) -> None:
        if self.params <= 0:
            raise BudgetError(f"budget: must be a positive parameter count, got {self.params}")

    @classmethod
    def from_rank(cls, sites: Sequence[AdapterSite], rank: int, grid: RankGrid | None = None) -> Budget:
        """The parameters of uniform rank ``rank`` on ``sites`` (the baseline a search must match)."""
        grid = grid or RankGrid()
        if rank <= 0:
            raise BudgetError(f"budget.rank: must be a positive rank, got {rank}")
        if rank not in grid:
            raise BudgetError(
                f"budget.rank: {rank} is not in the grid {grid}; add it so the uniform baseline is reachable"
            )
        if not sites:
            raise BudgetError("budget.rank: there are no sites to spend it on")
        params = RankSchedule.uniform(sites, rank, grid).parameter_count
        if params == 0:
            raise BudgetError(f"budget.rank: rank {rank} leaves every site without an adapter")
        return cls(params=params, uniform_rank=rank)

    @property
    def floor(self) -> int:
        return math.ceil(BUDGET_FLOOR * self.params)

    def admits(self, parameter_count: int) -> bool:
        return self.floor <= parameter_count <= self.params

    def describe(self, parameter_count: int) -> str:
        share = 100.0 * parameter_count / self.params
        what = f"uniform rank {self.uniform_rank}" if self.uniform_rank else "absolute"
        return f"{parameter_count:,} / {self.params:,} params ({share:.1f}% of the {what} budget)"
