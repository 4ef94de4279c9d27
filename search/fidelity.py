"""Multi-fidelity rungs and asynchronous successive halving (ASHA), over frozen trial history.

A search with a ``fidelity`` trains every new schedule for the lowest rung's steps first; the best
1/eta of each rung, by a score the caller supplies (the performance model's prediction of the
top-rung objective, or the rung's own objective), continue to the next rung, up to ``max_steps``.
Promotion is asynchronous, as in ASHA (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", MLSys 2020): whenever a worker asks for work, the highest rung with a promotable schedule
goes first, and only when no rung has one does a new schedule start at the bottom. No rung waits
for the rest of its cohort, so workers never idle while stragglers finish.

A schedule at rung k is promotable once at least ``eta`` schedules finished rung k, it is among the
top ``floor(finished / eta)`` of them, and it has not been promoted yet. Pure functions of frozen
inputs: no database, deterministic for the same history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ranktune.search.errors import RanktuneError


class FidelityError(RanktuneError):
    field = "fidelity"


@dataclass(frozen=True)
class Fidelity:
    """Rungs at ``min_steps * eta**k`` steps, the last one exactly ``max_steps``."""

    min_steps: int
    max_steps: int
    eta: int = 3

    def __post_init__(self) -> None:
        if self.min_steps < 1:
            raise FidelityError(f"fidelity.min_steps: must be at least 1, got {self.min_steps}")
        if self.max_steps < self.min_steps:
            raise FidelityError(
                f"fidelity.max_steps: must be at least min_steps ({self.min_steps}), got {self.max_steps}"
            )
        if self.eta < 2:
            raise FidelityError(f"fidelity.eta: must be at least 2, got {self.eta}")

    @property
    def rungs(self) -> tuple[int, ...]:
        """Steps per rung, increasing; a rung within a factor 1.5 of ``max_steps`` merges into it."""
        steps = []
        k = 0
        while (s := self.min_steps * self.eta**k) * 1.5 < self.max_steps:
            steps.append(s)
            k += 1
        return (*steps, self.max_steps)

    @property
    def top(self) -> int:
        return len(self.rungs) - 1

    def steps(self, rung: int) -> int:
        if not 0 <= rung <= self.top:
            raise FidelityError(f"fidelity: rung {rung} does not exist (0 to {self.top})")
        return self.rungs[rung]

    def full_run_equivalents(self, rung_counts: Mapping[int, int], resume: bool) -> float:
        """Compute of ``rung_counts`` (finished trials per rung) in top-rung runs. With ``resume`` a
        promoted trial trains only the steps its rung adds to the one below."""
        total = 0.0
        for rung, count in rung_counts.items():
            below = self.rungs[rung - 1] if resume and rung > 0 else 0
            total += count * (self.steps(rung) - below)
        return total / self.max_steps


@dataclass(frozen=True)
class RungEntry:
    """One schedule's finished run at one rung (``config`` names the schedule across its rungs)."""

    config: int
    rung: int
    score: float  # higher is better (the caller flips a minimized objective)


@dataclass(frozen=True)
class Promotion:
    config: int
    rung: int  # the rung it goes to


def promotable(
    finished: Iterable[RungEntry], eta: int, top: int, started: Iterable[tuple[int, int]] = ()
) -> list[Promotion]:
    """Every promotion ASHA allows now, highest target rung first, best score first within a rung.

    ``finished`` holds the finished runs; ``started`` the (config, rung) pairs that exist in any
    state (queued, running, finished): a config already at rung k+1 is not promoted again.
    """
    by_rung: dict[int, dict[int, float]] = {}
    present: set[tuple[int, int]] = set(started)
    for entry in finished:
        by_rung.setdefault(entry.rung, {})[entry.config] = entry.score
        present.add((entry.config, entry.rung))
    found: list[Promotion] = []
    for rung in sorted(by_rung, reverse=True):
        if rung >= top:
            continue
        scores = by_rung[rung]
        quota = math.floor(len(scores) / eta)
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        found += [Promotion(c, rung + 1) for c, _ in ranked[:quota] if (c, rung + 1) not in present]
    return found


def next_promotion(
    finished: Iterable[RungEntry], eta: int, top: int, started: Iterable[tuple[int, int]] = ()
) -> Promotion | None:
    """The promotion a free worker should take, or None: start a new schedule at rung 0."""
    found = promotable(finished, eta, top, started)
    return found[0] if found else None
