"""Confirmation: re-run the best proxy schedules and the uniform baseline at full length, with seeds.

``plan`` picks what to re-run from the finished proxy trials; ``summarize`` turns the confirm trials'
results into the search's result: each schedule's mean ± std over its seeds, the winner, and its gain
over uniform. Both are pure and deterministic, so the service can recompute the plan at every top-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ranktune.search.schedule import RankSchedule
from ranktune.search.strategies import TrialRecord

SEED_OFFSET = 1_000  # confirm seeds differ from every proxy seed of the search


@dataclass(frozen=True)
class ConfirmRun:
    confirms: int  # the proxy trial number whose schedule is re-run (0: the uniform baseline)
    schedule: RankSchedule
    seed: int


def plan(
    proxy_trials: Sequence[TrialRecord],
    uniform: RankSchedule,
    top_k: int,
    seeds: int,
    direction: Literal["maximize", "minimize"],
    base_seed: int,
) -> list[ConfirmRun]:
    """Uniform first, then the ``top_k`` best distinct schedules, each with ``seeds`` seeds.

    ``proxy_trials`` carry the schedules they ended with (after any dynamic re-allocation);
    ``uniform`` is the baseline as such, which trial 0 started from.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    chosen: list[tuple[int, RankSchedule]] = [(0, uniform)]
    seen = {uniform.ranks}
    ranked = sorted(
        (t for t in proxy_trials if t.state == "succeeded" and t.objective is not None),
        key=lambda t: (-sign * float(t.objective), t.number),  # type: ignore[arg-type]
    )
    for trial in ranked:
        if len(chosen) > top_k:
            break
        if trial.number != 0 and trial.schedule.ranks not in seen:
            seen.add(trial.schedule.ranks)
            chosen.append((trial.number, trial.schedule))
    return [
        ConfirmRun(number, schedule, base_seed + SEED_OFFSET + s)
        for number, schedule in chosen
        for s in range(seeds)
    ]


@dataclass(frozen=True)
class Confirmed:
    trial_number: int
    objectives: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.objectives) / len(self.objectives)

    @property
    def std(self) -> float:
        n = len(self.objectives)
        if n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.objectives) / (n - 1))

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_number": self.trial_number,
            "mean": self.mean,
            "std": self.std,
            "seeds": len(self.objectives),
            "objectives": list(self.objectives),
        }


def summarize(
    runs: Sequence[tuple[int, float | None]], direction: Literal["maximize", "minimize"]
) -> dict[str, Any] | None:
    """``runs``: (confirmed proxy trial number, objective or None when the run failed).

    The winner is the best mean (uniform may win: then the gain is 0); None when nothing succeeded.
    """
    by_trial: dict[int, list[float]] = {}
    for number, value in runs:
        by_trial.setdefault(number, [])
        if value is not None:
            by_trial[number].append(value)
    confirmed = [Confirmed(n, tuple(v)) for n, v in sorted(by_trial.items()) if v]
    if not confirmed:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    winner = max(confirmed, key=lambda c: (sign * c.mean, -c.trial_number))
    uniform = next((c for c in confirmed if c.trial_number == 0), None)
    return {
        "winner": winner.to_json(),
        "uniform": uniform.to_json() if uniform else None,
        "gain": sign * (winner.mean - uniform.mean) if uniform else None,
        "confirmed": [c.to_json() for c in confirmed],
    }
