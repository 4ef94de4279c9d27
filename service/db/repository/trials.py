"""Trials of a search: reading them, and keeping a running search supplied with queued trials.

``top_up`` and ``finish_if_done`` run with the search row locked (``searches.lock_search``) inside
the caller's transaction, so API replicas that complete trials of one search at the same moment
never create more than ``parallelism`` active or ``max_trials`` total trials.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search.schedule import RankSchedule
from search.strategies import TrialRecord, get_proposer, propose_next
from service.db.models import Search, Trial
from service.errors import NotFound
from service.schemas.searches import TrialCounts
from service.searching import search_context, stored_space, stored_spec

log = logging.getLogger("ranktune.trials")


def trial_counts(session: Session, search_id: int) -> TrialCounts:
    rows = session.execute(
        select(Trial.state, func.count()).where(Trial.search_id == search_id).group_by(Trial.state)
    ).all()
    return TrialCounts(**{state: count for state, count in rows})


def list_trials(
    session: Session, search_id: int, state: str | None = None, limit: int = 1000, offset: int = 0
) -> list[Trial]:
    query = select(Trial).where(Trial.search_id == search_id)
    if state is not None:
        query = query.where(Trial.state == state)
    return list(session.scalars(query.order_by(Trial.number).limit(limit).offset(offset)))


def get_trial(session: Session, trial_id: int) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"trial_id: there is no trial {trial_id}", field="trial_id")
    return trial


def best_trial(session: Session, search: Search) -> Trial | None:
    """The succeeded trial with the best objective; ties go to the earlier trial."""
    order = Trial.objective.desc() if search.objective_direction == "maximize" else Trial.objective.asc()
    query = (
        select(Trial)
        .where(Trial.search_id == search.id, Trial.state == "succeeded", Trial.objective.is_not(None))
        .order_by(order, Trial.number)
        .limit(1)
    )
    return session.scalars(query).first()


def trial_records(session: Session, search_id: int) -> tuple[TrialRecord, ...]:
    trials = session.scalars(select(Trial).where(Trial.search_id == search_id).order_by(Trial.number))
    return tuple(
        TrialRecord(
            number=t.number,
            state=t.state,  # type: ignore[arg-type]
            schedule=RankSchedule.from_json(t.schedule),
            proxy_seed=t.proxy_seed,
            objective=t.objective,
            metrics=dict(t.metrics or {}),
        )
        for t in trials
    )


def top_up(session: Session, search: Search, now: datetime) -> list[Trial]:
    """Queue new trials until ``parallelism`` are queued or running, within ``max_trials`` in all;
    finish the search when every trial it will ever have is terminal."""
    if search.state != "running":
        return []
    counts = trial_counts(session, search.id)
    active = counts.queued + counts.running
    room = min(search.parallelism - active, search.max_trials - search.trials_created)
    if room <= 0:
        if active == 0 and search.trials_created >= search.max_trials:
            finish(session, search, now)
        return []
    spec = stored_spec(search.spec)
    context = search_context(spec, stored_space(search.spec, search.sites))
    proposer = get_proposer(search.strategy)
    history = trial_records(session, search.id) if proposer.uses_history else ()
    created = []
    for _ in range(room):
        number = search.trials_created
        proposal = propose_next(proposer, context, number, history)
        trial = Trial(
            search_id=search.id,
            number=number,
            state="queued",
            schedule=proposal.schedule.to_json(),
            parameter_count=proposal.schedule.parameter_count,
            proxy_seed=proposal.proxy_seed,
            attempt=0,
            max_attempts=search.max_attempts,
            created_at=now,
        )
        session.add(trial)
        created.append(trial)
        search.trials_created = number + 1
        if proposer.uses_history:
            history = (*history, TrialRecord(number, "queued", proposal.schedule, proposal.proxy_seed))
    session.flush()
    log.info("queued %d trial(s)", len(created), extra={"action": "top_up", "search": search.id})
    return created


def finish(session: Session, search: Search, now: datetime) -> None:
    best = best_trial(session, search)
    search.finished_at = now
    if best is None:
        search.state = "failed"
        search.reason = "no trial succeeded"
    else:
        search.state = "finished"
        search.best_trial_id = best.id
    log.info(
        "search %s",
        search.state,
        extra={"action": "finish", "search": search.id, "trial": search.best_trial_id},
    )
