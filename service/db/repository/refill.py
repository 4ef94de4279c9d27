"""Proposing the trials a request did not: keeping running searches' queues filled to parallelism.

A submission proposes a few trials; a result one, after the result is committed and if the search row
frees within ``RESULT_LOCK_WAIT_MS`` (``after_result``; proposals cost CPU, TPE's more the more trials
are queued, and they run with the search row locked); ``fill`` proposes the rest, a slice at a time,
for the server's background loop (``service.queue_filler``), and ``fill_for_claim`` one trial for a
claim that found nothing queued, so a claim finds work whenever work can be proposed.

Every fill is its own transaction with the search row locked and re-read (``top_up``), so fills in
several API processes never propose two trials for one number nor go past ``parallelism`` or
``max_trials``. On PostgreSQL a claim's fill skips a search whose row another transaction holds (SKIP
LOCKED) before it waits for one; the background filler and a result's proposal wait at most
``FILL_LOCK_WAIT_MS`` / ``RESULT_LOCK_WAIT_MS``. SQLite has one writer at a time anyway.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import Search, Trial
from ranktune.service.db.repository.trials import top_up

CLAIM_CANDIDATES = 4  # searches a claim tries (busy ones are skipped) before it waits for one
CLAIM_LOCK_WAIT_MS = 500  # how long a claim waits for a busy search's lock before it answers 204
# The background filler waits this long for a search's row: results and claims take it for one
# proposal at a time, so under load a filler that skipped busy rows (SKIP LOCKED) hardly ever got it
# and the queue ran dry (bench/bench_leases.py: claims proposing for themselves, 204s).
FILL_LOCK_WAIT_MS = 200
RESULT_LOCK_WAIT_MS = 200  # a result's proposal waits as long, then leaves it to the filler


def short_of_trials(session: Session, limit: int | None = None) -> list[int]:
    """Running searches with fewer than ``parallelism`` trials queued or running that still propose
    proxy trials, or have none queued or running (their confirmation is due, or their end: a result
    whose top-up found the search busy leaves that to the filler), the one furthest behind in the
    fair-share order first."""
    active = (
        select(func.count())
        .select_from(Trial)
        .where(Trial.search_id == Search.id, Trial.state.in_(("queued", "running")))
        .correlate(Search)
        .scalar_subquery()
    )
    query = (
        select(Search.id)
        .where(Search.state == "running", or_(Search.trials_created < Search.max_trials, active == 0))
        .where(active < Search.parallelism)
        .order_by(Search.next_claim_order, Search.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _lock_unless_busy(session: Session, search_id: int) -> Search | None:
    """The search row locked, or None when another transaction holds it (PostgreSQL) or it is gone."""
    query = select(Search).where(Search.id == search_id).with_for_update(skip_locked=True)
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _lock_waiting(session: Session, search_id: int, wait_ms: int) -> Search | None:
    """The search row locked, waiting up to ``wait_ms`` for the transaction that holds it (PostgreSQL's
    ``lock_timeout``); None when that did not end in time or the search is gone."""
    session.execute(text(f"SET LOCAL lock_timeout = {int(wait_ms)}"))
    query = select(Search).where(Search.id == search_id).with_for_update()
    try:
        return session.scalars(query.execution_options(populate_existing=True)).first()
    except OperationalError as error:  # LockNotAvailable: still held after wait_ms
        if getattr(error.orig, "sqlstate", None) != "55P03":
            raise
        return None


def fill(
    session: Session,
    search_id: int,
    now: datetime,
    limit: int | None = None,
    until: float | None = None,
    wait_ms: int | None = None,
) -> int:
    """Top up one search in a transaction of its own (see ``top_up`` for ``limit`` and ``until``);
    returns the trials queued, 0 when it is busy elsewhere, finished, or has no room. A busy search
    is skipped, or with ``wait_ms`` (PostgreSQL) waited for that long."""
    begin_write(session)
    if wait_ms is not None and session.get_bind().dialect.name == "postgresql":
        search = _lock_waiting(session, search_id, wait_ms)
    else:
        search = _lock_unless_busy(session, search_id)
    if search is None:
        session.rollback()
        return 0
    created = len(top_up(session, search, now, limit=limit, until=until))
    session.commit()
    return created


def after_result(session: Session, search: Search, now: datetime, proposals: int) -> Search:
    """After a result was committed: queue up to ``proposals`` trials for its search, or its
    confirmation runs, or finish it, in a transaction of its own; returns the search as it stands.

    The search row is waited for up to ``RESULT_LOCK_WAIT_MS`` (PostgreSQL; another result's top-up or
    a fill holds it for one slice at most); past that this does nothing, and the queue filler proposes
    what was skipped and finishes a search left with nothing queued or running (``short_of_trials``)."""
    begin_write(session)
    if session.get_bind().dialect.name == "postgresql":
        locked = _lock_waiting(session, search.id, RESULT_LOCK_WAIT_MS)
    else:
        locked = _lock_unless_busy(session, search.id)
    if locked is None:
        session.rollback()  # a lock timeout aborted the transaction (rare: the caller reloads)
        return search
    top_up(session, locked, now, limit=proposals)
    session.commit()
    return locked


def fill_for_claim(session: Session, now: datetime) -> bool:
    """Queue one trial for the search owed one most, for a claim that found nothing queued; False
    when no running search can take one now (the claim then answers 204).

    When every candidate is busy (PostgreSQL: another claim or a result holds its row, proposing),
    the claim waits for the first one's lock, up to ``CLAIM_LOCK_WAIT_MS``: the holder's trial is
    queued when it commits, so True (claim again) rather than a 204 that idles a worker for a whole
    ``Retry-After`` while work is being proposed. Without the wait, 64 claimers on one search got
    204s most of the time (bench/bench_leases.py)."""
    candidates = short_of_trials(session, CLAIM_CANDIDATES)  # a read; ``fill`` checks again, locked
    session.rollback()
    if not candidates:
        return False
    if any(fill(session, search_id, now, limit=1) for search_id in candidates):
        return True
    if session.get_bind().dialect.name != "postgresql":
        return False  # one writer at a time: a candidate that took nothing has no room
    begin_write(session)
    search = _lock_waiting(session, candidates[0], CLAIM_LOCK_WAIT_MS)
    if search is None:
        session.rollback()
        return False
    top_up(session, search, now, limit=1)
    session.commit()
    return True
