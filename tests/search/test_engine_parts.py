"""Pruning, confirmation and dynamic re-allocation as pure functions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ranktune.search.confirm import (
    RECHECK_SEED_OFFSET,
    SEED_OFFSET,
    ConfirmResult,
    plan,
    ranked,
    recheck_plan,
    summarize,
)
from ranktune.search.dynamic import reallocate
from ranktune.search.pruning import FinishedCurve, PrunerSettings, should_prune
from ranktune.search.strategies import TrialRecord
from tests.search.synthetic import context

DONE = [
    FinishedCurve("succeeded", [(50, 0.5), (100, 0.6)], 0.6),
    FinishedCurve("succeeded", [(50, 0.6), (100, 0.7)], 0.7),
    FinishedCurve("succeeded", [(50, 0.55), (100, 0.65)], 0.65),
]


def test_median_pruner_needs_its_startup_trials_and_warmup() -> None:
    median = PrunerSettings("median", startup_trials=2)
    assert should_prune(median, "maximize", [(50, 0.1)], DONE)
    assert not should_prune(median, "maximize", [(50, 0.9)], DONE)
    assert not should_prune(PrunerSettings("median", startup_trials=5), "maximize", [(50, 0.1)], DONE)
    assert not should_prune(PrunerSettings("median", 2, warmup_steps=60), "maximize", [(50, 0.1)], DONE)
    assert should_prune(median, "minimize", [(50, 0.9)], DONE)  # direction matters


def test_successive_halving_and_none() -> None:
    many = [
        FinishedCurve("succeeded", [(1, 0.5 + i / 100), (3, 0.6 + i / 100)], 0.6 + i / 100) for i in range(9)
    ]
    halving = PrunerSettings("halving")
    assert should_prune(halving, "maximize", [(1, 0.0)], many)
    assert not should_prune(halving, "maximize", [(1, 0.99)], many)
    assert not should_prune(PrunerSettings("none"), "maximize", [(1, 0.0)], many)


def _records(objectives: list[float]) -> list[TrialRecord]:
    space = context().space
    schedules = [space.uniform(), *(space.random(i) for i in range(1, len(objectives)))]
    return [
        TrialRecord(i, "succeeded", s, 0, v)
        for i, (s, v) in enumerate(zip(schedules, objectives, strict=True))
    ]


def test_confirmation_plan_takes_uniform_then_the_best_distinct_schedules() -> None:
    records = _records([0.5, 0.7, 0.9, 0.6])
    records.append(TrialRecord(4, "succeeded", records[2].schedule, 0, 0.95))  # same schedule as trial 2
    runs = plan(records, context().space.uniform(), top_k=2, seeds=2, direction="maximize", base_seed=7)
    seeds = (7 + SEED_OFFSET, 8 + SEED_OFFSET)
    # Trial 2's schedule counts once, with the mean of its two runs, under its first number.
    assert [(r.confirms, r.seed) for r in runs] == [(n, seed) for n in (0, 2, 1) for seed in seeds]
    assert runs[0].schedule == context().space.uniform()
    low = plan(records, context().space.uniform(), top_k=1, seeds=1, direction="minimize", base_seed=0)
    assert [r.confirms for r in low] == [0, 3]


def test_a_recheck_reranks_by_the_mean_of_a_schedules_proxy_runs() -> None:
    records = _records([0.5, 0.8, 0.9, 0.6])
    again = recheck_plan(records, 2, "maximize")
    expected = [(2, RECHECK_SEED_OFFSET, "queued"), (1, RECHECK_SEED_OFFSET, "queued")]
    assert [(t.number, t.proxy_seed, t.state) for t in again] == expected
    assert [t.schedule for t in again] == [records[2].schedule, records[1].schedule]
    # Trial 2's second run was unlucky: its mean (0.75) falls below trial 1's (0.8 and 0.82).
    records += [replace(again[0], number=4, state="succeeded", objective=0.6),
                replace(again[1], number=5, state="succeeded", objective=0.82)]  # fmt: skip
    assert [(t.number, t.objective) for t in ranked(records, "maximize")] == [
        (1, pytest.approx(0.81)), (2, pytest.approx(0.75)), (3, 0.6), (0, 0.5)
    ]  # fmt: skip
    runs = plan(records, context().space.uniform(), top_k=1, seeds=1, direction="maximize", base_seed=0)
    assert [r.confirms for r in runs] == [0, 1]
    assert recheck_plan(records, 0, "maximize") == []
    # With rungs, a schedule's runs at different rungs stay apart: the top rung ranks first.
    top = TrialRecord(6, "succeeded", records[3].schedule, 0, 0.1, rung=1)
    assert [t.number for t in ranked([*records, top], "maximize")][:2] == [6, 1]


def test_summary_names_the_best_mean_and_its_gain() -> None:
    a, b = SEED_OFFSET, SEED_OFFSET + 1
    runs = [(0, a, 0.60), (0, b, 0.62), (2, a, 0.70), (2, b, 0.66), (3, a, 0.5), (3, b, None)]
    result = summarize([ConfirmResult(*r) for r in runs], "maximize")
    assert result is not None
    assert result["winner"]["trial_number"] == 2 and result["winner"]["mean"] == pytest.approx(0.68)
    assert result["winner"]["std"] == pytest.approx(0.0282842, rel=1e-4)
    assert result["uniform"]["mean"] == pytest.approx(0.61)
    assert result["gain"] == pytest.approx(0.07)
    assert [c["seeds"] for c in result["confirmed"]] == [2, 2, 1]
    # Without per-example outcomes the gain is paired by seed: two seeds, a t interval on 1 df.
    assert result["paired"]["method"] == "seeds" and result["paired"]["seeds"] == 2
    low, high = result["paired"]["ci"]
    assert low < 0.07 < high and result["paired"]["verdict"] == "no significant difference"
    assert result["confirmed"][0]["paired"] is None  # uniform is not compared with itself
    assert result["confirmed"][2]["paired"]["method"] == "none"  # one shared seed: no interval
    assert summarize([ConfirmResult(0, a, None)], "maximize") is None
    uniform_wins = summarize([ConfirmResult(0, a, 0.9), ConfirmResult(1, a, 0.5)], "maximize")
    assert (
        uniform_wins is not None and uniform_wins["winner"]["trial_number"] == 0 and uniform_wins["gain"] == 0
    )


def test_reallocation_moves_rank_to_important_sites_within_budget() -> None:
    space = context().space
    current = space.uniform()
    important = {s.name for s in current.sites if s.tower == "language" and s.kind in ("up", "down")}
    stats = {s.name: {"delta_norm": 5.0 if s.name in important else 1.0, "rank": 8.0} for s in current.sites}
    schedule, reason = reallocate(space, current, stats)
    assert space.budget.admits(schedule.parameter_count)
    assert "gamma 1.0" in reason

    def share(s):  # type: ignore[no-untyped-def]
        return sum(r for x, r in zip(s.sites, s.ranks, strict=True) if x.name in important) / sum(s.ranks)

    assert share(schedule) > share(current)
    kept, why = reallocate(space, current, {})
    assert kept == current and "kept" in why
    judged, because = reallocate(space, current, stats, scorer=lambda pool: [0.0] * len(pool))
    assert judged == current and "prefers the current" in because
