"""Multi-fidelity searches over trial records: which schedule goes up a rung, and what each model sees.

A search with a ``fidelity`` (``search.fidelity``) has one trial per schedule and rung: trial
``n`` starts a schedule at rung 0 and a promotion adds a trial with the same schedule at the next
rung (``TrialRecord.config`` names the trial that started it). ``next_promotion`` decides, from
the frozen history, whether a free worker should continue a schedule or start a new one:

1. the uniform baseline (config 0) goes up a rung as soon as another schedule did (and it finished
   the rung below), before anything else, so every rung in use has its own baseline: gains are
   measured at equal length, which is what lets one performance model learn from every rung;
2. then ASHA over the other schedules, highest rung first, ranked by the proposer's
   ``promotion_scores`` (the performance model's prediction at the top rung) or, by default, by
   their objective at the rung.

TPE models one fidelity at a time, as BOHB does: the highest rung with enough finished trials.
Pure functions of frozen inputs, like every proposer.
"""

from __future__ import annotations

from collections.abc import Sequence

from ranktune.search.fidelity import Promotion, RungEntry, promotable
from ranktune.search.proposer import Direction, Proposer, SearchContext, TrialRecord

BASELINE = 0  # config number of the uniform baseline
MODEL_MIN_TRIALS = 6  # succeeded trials a rung needs before TPE models it instead of a lower one


def succeeded(trials: Sequence[TrialRecord], rung: int) -> list[TrialRecord]:
    return [t for t in trials if t.rung == rung and t.state == "succeeded" and t.objective is not None]


def baselines(trials: Sequence[TrialRecord]) -> dict[int, float]:
    """The uniform baseline's objective per rung it succeeded at."""
    return {t.rung: float(t.objective) for t in trials if t.config_number == BASELINE and t.state ==
            "succeeded" and t.objective is not None}  # fmt: skip


def objective_scores(trials: Sequence[TrialRecord], rung: int, direction: Direction) -> dict[int, float]:
    """Each config's objective at ``rung``, oriented so higher is better (uniform excluded)."""
    sign = 1.0 if direction == "maximize" else -1.0
    return {t.config_number: sign * float(t.objective) for t in succeeded(trials, rung)  # type: ignore[arg-type]
            if t.config_number != BASELINE}  # fmt: skip


def next_promotion(
    proposer: Proposer, context: SearchContext, trials: tuple[TrialRecord, ...]
) -> Promotion | None:
    """The promotion a free worker should run next, or None: start a new schedule at rung 0."""
    fidelity = context.fidelity
    if fidelity is None or fidelity.top == 0:
        return None
    started = {(t.config_number, t.rung) for t in trials}
    for rung in sorted(baselines(trials), reverse=True):
        reached = any(c != BASELINE and r == rung + 1 for c, r in started)
        if rung < fidelity.top and reached and (BASELINE, rung + 1) not in started:
            return Promotion(BASELINE, rung + 1)
    entries: list[RungEntry] = []
    for rung in range(fidelity.top):
        finished = objective_scores(trials, rung, context.direction)
        if len(finished) < fidelity.eta:
            continue  # nothing can go up from this rung yet: spare the proposer a model fit
        scores = proposer.promotion_scores(context, trials, rung) or finished
        entries += [RungEntry(config, rung, scores.get(config, finished[config])) for config in finished]
    found = promotable(entries, fidelity.eta, fidelity.top, started)
    return found[0] if found else None


def modelled_rung(trials: Sequence[TrialRecord], minimum: int = MODEL_MIN_TRIALS) -> int:
    """The highest rung with at least ``minimum`` succeeded trials (0 when none has)."""
    counts: dict[int, int] = {}
    for t in trials:
        if t.state == "succeeded" and t.objective is not None:
            counts[t.rung] = counts.get(t.rung, 0) + 1
    return max((r for r, n in counts.items() if n >= minimum), default=0)


def one_fidelity(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    """What a single-fidelity model (TPE) sees: the trials of ``modelled_rung``, plus every unfinished
    rung-0 trial (the schedules in flight, which TPE's constant liar steers away from)."""
    if all(t.rung == 0 for t in trials):
        return list(trials)
    rung = modelled_rung(trials)
    return [t for t in trials if t.rung == rung or (t.rung == 0 and not t.finished)]
