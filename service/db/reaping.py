"""Expired leases: a lease past its ``expires_at`` puts its trial back in the queue until the trial's
``max_attempts``, then fails it (the lease protocol's reap; see ``service.db.leases``).

Lock order, as everywhere: search, trial, lease, worker.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import Lease, Search, Trial
from ranktune.service.db.repository.searches import lock_search
from ranktune.service.db.repository.trials import top_up
from ranktune.service.db.repository.workers import worker_finished_trial

log = logging.getLogger("ranktune.leases")


def reap_expired(session: Session, now: datetime) -> int:
    """Expire every active lease past its ``expires_at``; returns how many were expired."""
    expired = session.execute(
        select(Trial.search_id, Lease.trial_id, Lease.id)
        .join(Trial, Trial.id == Lease.trial_id)
        .where(Lease.state == "active", Lease.expires_at < now)
    ).all()
    session.rollback()  # end the read; SQLite needs the write transaction to start afresh
    if not expired:
        return 0
    begin_write(session)
    reaped = 0
    touched: dict[int, Search] = {}
    for search_id, trial_id, lease_id in sorted(expired):
        search = touched.get(search_id) or lock_search(session, search_id)
        touched[search_id] = search
        trial = session.get(Trial, trial_id, with_for_update=True, populate_existing=True)
        lease = session.get(Lease, lease_id, with_for_update=True, populate_existing=True)
        assert trial is not None and lease is not None
        if lease.state != "active" or lease.expires_at >= now:
            continue  # another replica reaped it, or a heartbeat just extended it
        _expire(session, search, trial, lease, now)
        reaped += 1
    for search in touched.values():
        top_up(session, search, now, limit=0)  # proposing is for refill and claims, never the sweep
    session.commit()
    return reaped


def _expire(session: Session, search: Search, trial: Trial, lease: Lease, now: datetime) -> None:
    lease.state, lease.ended_at = "expired", now
    worker_finished_trial(session, lease.worker_id, trial.id, done=False, now=now)
    if trial.state != "running" or trial.attempt != lease.attempt:
        return
    session.flush()
    times = session.scalar(
        select(func.count()).select_from(Lease).where(Lease.trial_id == trial.id, Lease.state == "expired")
    )
    if trial.attempt >= trial.max_attempts:
        trial.state, trial.finished_at = "failed", now
        trial.reason = (
            f"lease expired {times} time{'s' if times != 1 else ''} (max_attempts {trial.max_attempts})"
        )
    else:
        trial.state, trial.step, trial.worker_name = "queued", None, None
        trial.reason = f"lease of attempt {lease.attempt} expired"
    log.warning(
        trial.reason,
        extra={"action": "reap", "search": search.id, "trial": trial.id, "worker": lease.worker_id},
    )
