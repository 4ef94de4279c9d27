"""Searches: submission, reading, cancellation. Every function that writes commits."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import Lease, Search, Trial
from ranktune.service.db.repository import checkpoints
from ranktune.service.db.repository.trials import best_objective, best_trial, top_up, trial_counts
from ranktune.service.db.types import utcnow
from ranktune.service.errors import Conflict, NotFound
from ranktune.service.schemas.searches import SearchPublic
from ranktune.service.searching import PreparedSearch

log = logging.getLogger("ranktune.searches")
# Trials a submission proposes itself; the queue filler (service.queue_filler) and claims that find
# nothing queued propose the rest, so a 1,024-parallel TPE search is stored in well under a second.
SUBMIT_PROPOSALS = 16


def get_search(session: Session, search_id: int) -> Search:
    search = session.get(Search, search_id)
    if search is None:
        raise NotFound(f"search_id: there is no search {search_id}", field="search_id")
    return search


def lock_search(session: Session, search_id: int) -> Search:
    """The search row, locked until commit (PostgreSQL; SQLite writers are serialized anyway).

    Lock order everywhere: search, then trial, then lease, then worker.
    """
    query = select(Search).where(Search.id == search_id).with_for_update()
    search = session.scalars(query.execution_options(populate_existing=True)).first()
    if search is None:
        raise NotFound(f"search_id: there is no search {search_id}", field="search_id")
    return search


def create_search(session: Session, prepared: PreparedSearch, now: datetime | None = None) -> Search:
    """Store the search and queue its first trials (at most ``SUBMIT_PROPOSALS``), in one transaction."""
    now = now or utcnow()
    spec = prepared.spec
    begin_write(session)
    search = Search(
        name=spec.name,
        spec=prepared.spec_json(),
        state="running",
        sites=[s.to_json() for s in prepared.sites],
        strategy=spec.strategy,
        budget_params=prepared.space.budget.params,
        budget_rank=prepared.space.budget.uniform_rank,
        max_trials=spec.max_trials,
        parallelism=spec.parallelism,
        max_attempts=spec.max_attempts,
        lease_ttl_s=float(spec.lease_ttl_s or 0.0),
        objective_metric=spec.objective.metric,
        objective_direction=spec.objective.direction,
        trials_created=0,
        created_at=now,
    )
    session.add(search)
    session.flush()
    top_up(session, search, now, limit=SUBMIT_PROPOSALS)
    session.commit()
    log.info("submitted %r", spec.name, extra={"action": "submit", "search": search.id})
    return search


def list_searches(
    session: Session, state: str | None = None, limit: int = 100, offset: int = 0
) -> list[Search]:
    query = select(Search)
    if state is not None:
        query = query.where(Search.state == state)
    return list(session.scalars(query.order_by(Search.id.desc()).limit(limit).offset(offset)))


def cancel_search(session: Session, search_id: int, now: datetime | None = None) -> Search:
    """Cancel queued and running trials; running ones learn it from their next heartbeat ("stop")."""
    now = now or utcnow()
    begin_write(session)
    search = lock_search(session, search_id)
    if search.state == "cancelled":
        session.commit()
        return search
    if search.state != "running":
        session.rollback()
        raise Conflict(f"state: search {search_id} is already {search.state}", field="state")
    trial_ids = select(Trial.id).where(Trial.search_id == search_id).scalar_subquery()
    session.execute(
        update(Trial)
        .where(Trial.search_id == search_id, Trial.state.in_(("queued", "running")))
        .values(state="cancelled", reason="search cancelled", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Lease)
        .where(Lease.trial_id.in_(trial_ids), Lease.state == "active")
        .values(state="stopped", ended_at=now)
        .execution_options(synchronize_session=False)
    )
    search.state = "cancelled"
    checkpoints.drop_checkpoints(session, search_id)
    search.finished_at = now
    search.reason = "cancelled by a user"
    best = best_trial(session, search)
    search.best_trial_id = best.id if best else None
    session.commit()
    log.info("cancelled", extra={"action": "cancel", "search": search_id})
    return search


def search_public(session: Session, search: Search) -> SearchPublic:
    return SearchPublic(
        id=search.id,
        name=search.name,
        state=search.state,  # type: ignore[arg-type]
        model=search.spec["model"],
        task=search.spec["task"],
        strategy=search.strategy,
        spec=search.spec,
        budget_params=search.budget_params,
        budget_rank=search.budget_rank,
        site_count=len(search.sites),
        max_trials=search.max_trials,
        parallelism=search.parallelism,
        trials=trial_counts(session, search.id),
        best_trial_id=search.best_trial_id,
        best_objective=best_objective(session, search),
        performance_model=search.performance_model,
        result=search.result,
        reason=search.reason,
        created_at=search.created_at,
        finished_at=search.finished_at,
    )
