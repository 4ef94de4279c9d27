"""Multi-fidelity searches over trial records: promotions, the per-rung baseline, what TPE and the
performance model see, and which schedules a confirmation re-runs."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from ranktune.search import confirm, rungs
from ranktune.search.engine import PerfModelProposer, fit_model
from ranktune.search.fidelity import Fidelity, Promotion
from ranktune.search.perfmodel import spearman
from ranktune.search.proposer import ModelSettings
from ranktune.search.sampling import in_memory_study
from ranktune.search.strategies import Proposer, SearchContext, TrialRecord, get_proposer, propose_next
from tests.search.synthetic import context, objective

FIDELITY = Fidelity(min_steps=50, max_steps=600, eta=3)  # rungs 50, 150, 600


def at_length(record: TrialRecord, steps: int, noise: float = 0.0) -> float:
    """The synthetic objective after ``steps``: it grows with length, and short runs are noisier."""
    clean = objective(record.schedule) * (1.0 - np.exp(-steps / 300.0))
    return float(clean + noise * np.random.default_rng(record.number).normal() / np.sqrt(steps / 50))


def finished(record: TrialRecord, noise: float = 0.0) -> TrialRecord:
    steps = record.steps or FIDELITY.max_steps  # a search without rungs: one length
    return replace(record, state="succeeded", objective=at_length(record, steps, noise))


def run(
    proposer: Proposer, ctx: SearchContext, trials: int, parallel: int = 3, noise: float = 0.0
) -> list[TrialRecord]:
    """Batches of ``parallel`` trials, proposed with the others of the batch in flight."""
    history: list[TrialRecord] = []
    while len(history) < trials:
        batch: list[TrialRecord] = []
        for _ in range(min(parallel, trials - len(history))):
            number = len(history) + len(batch)
            p = propose_next(proposer, ctx, number, (*history, *batch))
            batch.append(TrialRecord(number, "running", p.schedule, p.proxy_seed, vector=p.vector,
                                     rung=p.rung, config=p.config, steps=p.steps))  # fmt: skip
        history += [finished(r, noise) for r in batch]
    return history


@pytest.mark.parametrize("strategy", ["random", "tpe", "perfmodel"])
def test_asha_promotes_the_best_third_and_uniform_climbs_every_rung(strategy: str) -> None:
    ctx = context(seed=1, max_trials=40, fidelity=FIDELITY, model=ModelSettings(min_trials=6))
    history = run(get_proposer(strategy), ctx, 40)
    per_rung = Counter(t.rung for t in history)
    assert per_rung[0] > per_rung[1] > per_rung[2] >= 2, per_rung
    assert {t.rung for t in history if t.config_number == 0} == {0, 1, 2}  # a baseline on every rung
    by_number = {t.number: t for t in history}
    for t in history:
        assert t.steps == FIDELITY.steps(t.rung)
        if t.rung > 0:  # a promotion continues one schedule with its seed, from the rung below
            source = by_number[t.config_number]
            assert (t.schedule.ranks, t.proxy_seed, t.vector) == (
                source.schedule.ranks,
                source.proxy_seed,
                source.vector,
            )
            below = [u for u in history if u.config_number == t.config_number and u.rung == t.rung - 1]
            assert len(below) == 1 and below[0].number < t.number
    assert len({(t.config_number, t.rung) for t in history}) == len(history)  # never promoted twice
    # Each promotion went to a schedule in the top third of its rung at the time (raw objective
    # or model score): with a noiseless objective the best schedule of rung 0 reaches the top.
    rung0 = [t for t in history if t.rung == 0 and t.config_number != 0]
    best = max(rung0, key=lambda t: t.objective or 0.0)
    assert any(t.config_number == best.config_number and t.rung >= 1 for t in history)


def test_nothing_goes_up_before_eta_schedules_finished_a_rung_and_the_baseline_follows() -> None:
    ctx = context(seed=0, fidelity=FIDELITY)
    proposer = get_proposer("random")
    history = run(proposer, ctx, 3, parallel=3)  # uniform and two schedules at rung 0
    assert rungs.next_promotion(proposer, ctx, tuple(history)) is None  # 2 schedules < eta
    history = run(proposer, ctx, 4, parallel=4)  # a third one
    promotion = rungs.next_promotion(proposer, ctx, tuple(history))
    best = max(history[1:], key=lambda t: t.objective or 0.0)
    assert promotion == Promotion(best.number, 1)
    history.append(replace(best, number=4, state="running", objective=None, config=best.number, rung=1))
    assert rungs.next_promotion(proposer, ctx, tuple(history)) == Promotion(0, 1)  # uniform follows


def test_a_search_without_rungs_proposes_as_before() -> None:
    ctx = context(seed=2)
    for strategy in ("random", "tpe"):
        history = run(get_proposer(strategy), ctx, 6)
        assert all(t.rung == 0 and t.config is None and t.steps is None for t in history)


def test_tpe_models_one_rung_and_keeps_the_schedules_in_flight() -> None:
    ctx = context(seed=3, fidelity=FIDELITY)
    history = run(get_proposer("random"), ctx, 30)
    top = rungs.modelled_rung(history)
    assert top == max(
        r for r, n in Counter(t.rung for t in history if t.state == "succeeded").items() if n >= 6
    )
    in_flight = replace(history[-1], number=30, state="running", objective=None, rung=0, config=None)
    seen = rungs.one_fidelity((*history, in_flight))
    assert {t.rung for t in seen if t.finished} == {top} and in_flight in seen
    study = in_memory_study(ctx, seen, seed=0)
    values = sorted(t.value for t in study.trials if t.value is not None)
    assert values == sorted(t.objective for t in history if t.rung == top)  # no other rung's values


def test_the_model_learns_gains_at_equal_length_and_predicts_any_rung() -> None:
    ctx = context(seed=4, max_trials=60, fidelity=FIDELITY, model=ModelSettings(min_trials=6))
    history = tuple(run(get_proposer("random"), ctx, 45))
    fitted = fit_model(ctx, history, seed=0)
    assert fitted is not None
    baselines = rungs.baselines(history)
    assert set(baselines) == {0, 1, 2}
    data = fitted.data
    rows = [t for t in history if t.state == "succeeded" and t.rung in baselines]
    expected = [t.objective - baselines[t.rung] for t in rows]  # type: ignore[operator]
    assert data.targets == pytest.approx(expected)
    column = data.features[:, -1]  # the fidelity feature: log length, 1.0 at the top rung
    assert column.max() == pytest.approx(1.0) and len(set(column.round(6))) == 3
    # At rung 0's length it ranks the schedules it was fitted on as they measured.
    done = [t for t in rows if t.rung == 0]
    short, _ = fitted.predict_objective([t.schedule for t in done], 50)
    assert spearman(short, np.asarray([t.objective for t in done])) > 0.5


def test_the_model_ranks_promotions_by_its_top_rung_prediction() -> None:
    ctx = context(seed=5, max_trials=60, fidelity=FIDELITY, model=ModelSettings(min_trials=6))
    proposer = PerfModelProposer()
    history = tuple(run(get_proposer("random"), ctx, 30))
    scores = proposer.promotion_scores(ctx, history, 0)
    assert scores is not None
    rung0 = {t.config_number for t in history if t.rung == 0 and t.config_number != 0}
    assert set(scores) == rung0
    assert get_proposer("random").promotion_scores(ctx, history, 0) is None  # default: raw objective


def test_a_confirmation_reruns_the_highest_rung_first() -> None:
    ctx = context(seed=6, fidelity=FIDELITY)
    history = run(get_proposer("random"), ctx, 24)
    uniform = ctx.space.uniform()
    runs = confirm.plan(history, uniform, top_k=2, seeds=1, direction="maximize", base_seed=0)
    chosen = [r.confirms for r in runs[1:]]
    by_number = {t.number: t for t in history}
    top = max(t.rung for t in history if t.config_number != 0)
    assert by_number[chosen[0]].rung == top
