"""Confirmation: re-run the best proxy schedules and the uniform baseline at full length, with seeds.

``plan`` picks what to re-run from the finished proxy trials; ``summarize`` turns the confirm trials'
results into the search's result: each schedule's mean ± std over its seeds, the winner, its gain over
uniform and, paired by seed and example, that gain's 95% interval. Both are pure and deterministic, so
the service can recompute the plan at every top-up.

``recheck_plan`` (spec ``confirm.recheck``) comes first when asked: the best few proxy schedules train
once more at their proxy length with another seed, and ``plan`` ranks every schedule by the mean of
its proxy runs. One proxy run's objective carries its seed's luck: on fashion-vqa the mean of two
proxy seeds ranked schedules as the full-length runs do with Spearman +0.55 against +0.36 for one
(bench/RESULTS.md, "Proxy fidelity (fashion)"), and the best of a dozen single runs is the luckiest.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ranktune.search.paired import binomial_se, is_rate, outcomes_se, paired_gain
from ranktune.search.schedule import RankSchedule
from ranktune.search.strategies import TrialRecord

SEED_OFFSET = 1_000  # confirm seeds differ from every proxy seed of the search
RECHECK_SEED_OFFSET = 500  # a recheck's seed: the proxy trial's own plus this (below SEED_OFFSET)


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
    chosen: list[tuple[int, RankSchedule]] = [(0, uniform)]
    seen = {uniform.ranks}
    for trial in ranked(proxy_trials, direction):
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


def ranked(
    proxy_trials: Sequence[TrialRecord], direction: Literal["maximize", "minimize"]
) -> list[TrialRecord]:
    """The succeeded proxy trials best first, one per (rung, schedule): multi-fidelity puts the highest
    rung first (ASHA's own verdict); a schedule run several times at one rung (a recheck) counts with the
    mean of its runs, under the number of its first trial."""
    sign = 1.0 if direction == "maximize" else -1.0
    groups: dict[tuple[int, tuple[int, ...]], list[TrialRecord]] = {}
    values: dict[tuple[int, tuple[int, ...]], list[float]] = {}
    for trial in sorted(proxy_trials, key=lambda t: t.number):
        if trial.state == "succeeded" and trial.objective is not None:
            key = (trial.rung, trial.schedule.ranks)
            groups.setdefault(key, []).append(trial)
            values.setdefault(key, []).append(float(trial.objective))
    means = {key: sum(v) / len(v) for key, v in values.items()}
    order = sorted(groups, key=lambda key: (-key[0], -sign * means[key], groups[key][0].number))
    return [replace(groups[key][0], objective=means[key]) for key in order]


def recheck_plan(
    proxy_trials: Sequence[TrialRecord], recheck: int, direction: Literal["maximize", "minimize"]
) -> list[TrialRecord]:
    """The ``recheck`` best proxy trials (``ranked``, uniform included when it is among them), each to
    train again at its own length and rung with the seed ``proxy_seed + RECHECK_SEED_OFFSET``: returned
    as the records to queue (state "queued", number = the trial it re-runs)."""
    return [
        replace(t, state="queued", proxy_seed=t.proxy_seed + RECHECK_SEED_OFFSET, objective=None, metrics={})
        for t in ranked(proxy_trials, direction)[:recheck]
    ]


@dataclass(frozen=True)
class ConfirmResult:
    """One finished confirmation run: which proxy trial it re-ran, its seed, and what it measured."""

    confirms: int
    seed: int
    objective: float | None  # None when the run failed
    outcomes: np.ndarray | None = None  # per-example 0/1 on the test split, when the worker sent them


@dataclass(frozen=True)
class Confirmed:
    trial_number: int
    runs: dict[int, tuple[float, np.ndarray | None]]  # seed -> (objective, outcomes)

    @property
    def objectives(self) -> tuple[float, ...]:
        return tuple(value for _, (value, _) in sorted(self.runs.items()))

    @property
    def mean(self) -> float:
        return sum(self.objectives) / len(self.objectives)

    @property
    def std(self) -> float:
        n = len(self.objectives)
        if n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.objectives) / (n - 1))

    @property
    def examples(self) -> int | None:
        sizes = {len(o) for _, o in self.runs.values() if o is not None}
        return sizes.pop() if len(sizes) == 1 else None

    def se(self, examples: int | None) -> float | None:
        """The mean's standard error over every example of every seed: binomial for a rate, from the
        outcomes' spread for float ones (a loss); None when the number of examples is unknown."""
        if not examples:
            return None
        outcomes = [o for _, o in self.runs.values() if o is not None]
        if outcomes and not any(is_rate(o) for o in outcomes):  # float outcomes: not a rate
            return outcomes_se(np.concatenate(outcomes))
        return binomial_se(self.mean, examples * len(self.runs))

    def to_json(self) -> dict[str, Any]:
        examples = self.examples
        return {
            "trial_number": self.trial_number,
            "mean": self.mean,
            "std": self.std,
            "seeds": len(self.objectives),
            "objectives": list(self.objectives),
            "examples": examples,
            "se": self.se(examples),
        }


def summarize(
    runs: Sequence[ConfirmResult], direction: Literal["maximize", "minimize"]
) -> dict[str, Any] | None:
    """The search's result from its confirmation runs.

    The winner is the best mean (uniform may win: then the gain is 0). Every other schedule is
    compared with uniform paired by seed (``search.paired``): ``paired`` holds the gain's 95% interval
    and a verdict ("no significant difference" when it contains 0). None when nothing succeeded.
    """
    by_trial: dict[int, dict[int, tuple[float, np.ndarray | None]]] = {}
    for run in runs:
        by_trial.setdefault(run.confirms, {})
        if run.objective is not None:
            by_trial[run.confirms][run.seed] = (float(run.objective), run.outcomes)
    confirmed = [Confirmed(n, r) for n, r in sorted(by_trial.items()) if r]
    if not confirmed:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    winner = max(confirmed, key=lambda c: (sign * c.mean, -c.trial_number))
    uniform = next((c for c in confirmed if c.trial_number == 0), None)
    entries = []
    for c in confirmed:
        entry = c.to_json()
        compared = paired_gain(c.runs, uniform.runs, sign) if uniform and c is not uniform else None
        entry["paired"] = compared.to_json() if compared else None
        entries.append(entry)
    paired = next((e["paired"] for e in entries if e["trial_number"] == winner.trial_number), None)
    return {
        "winner": winner.to_json(),
        "uniform": uniform.to_json() if uniform else None,
        "gain": sign * (winner.mean - uniform.mean) if uniform else None,
        "paired": paired,
        "confirmed": entries,
    }


def _signed(value: float | None, scale: float) -> str:
    if value is None:
        return "?"
    return f"{scale * value:+.1f}" if scale != 1.0 else f"{value:+.3g}"  # a loss's gain may be 0.004


def describe_result(result: dict[str, Any], metric: str = "accuracy") -> str:
    """One line for people: the winner's paired gain over uniform, its 95% interval and the verdict.

    When uniform itself won, the line names the best other confirmed schedule's comparison instead.
    A rate's gains (accuracy, exact_match) are in points (x100); other metrics' in their own units,
    signed so that better is positive (a lower ``eval_loss`` is a positive gain)."""
    scale, unit = (100.0, " points") if metric in ("accuracy", "exact_match") else (1.0, "")
    winner = result.get("winner") or {}
    paired = result.get("paired")
    label = f"trial {winner.get('trial_number')}"
    if paired is None and winner.get("trial_number") == 0:
        others = [c for c in result.get("confirmed", []) if c.get("paired")]
        if not others:
            return "uniform kept: no other schedule was confirmed"
        best = max(others, key=lambda c: c["paired"]["gain"])
        paired, label = best["paired"], f"uniform kept; best other, trial {best['trial_number']}"
    if paired is None:
        gain = result.get("gain")
        return f"{label}: gain {_signed(gain, scale)}{unit} (no uniform baseline to pair with)"
    sample = f"{paired['seeds']} seed{'s' if paired['seeds'] != 1 else ''}"
    if paired.get("examples"):
        sample += f" x {paired['examples']:,} examples"
    gain = f"{label}: gain {_signed(paired['gain'], scale)}{unit}"
    if paired.get("ci") is None:
        return f"{gain} (paired over {sample}; too few seeds for an interval)"
    low, high = paired["ci"]
    interval = f"95% CI {_signed(low, scale)} to {_signed(high, scale)}"
    return f"{gain} ({interval}, paired over {sample}): {paired['verdict']}"
