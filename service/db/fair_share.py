"""Fair sharing of claims between running searches: stride scheduling over a per-trial claim order.

Every trial gets a ``claim_order`` when it is queued, and a claim takes the queued trial with the
lowest one (ties: the oldest trial). The claim itself stays one statement that knows nothing about
searches (PostgreSQL: ``… ORDER BY claim_order, id LIMIT 1 FOR UPDATE SKIP LOCKED``; SQLite: the
same order, then compare-and-set), and never locks a search row.

- A search's consecutive trials are ``1 / priority`` apart, so among searches that have trials
  queued, one with priority 3 is served three times for each time one with priority 1 is.
- A search's next trial goes no earlier than the *virtual time*: the lowest order of a queued trial
  that was never claimed, which is where claims are now. A search submitted behind a 10,000-trial
  one therefore starts level with it, not behind its whole queue, and gets its first lease within
  one round of claims (one claim per search with trials queued); a search that had nothing queued
  for a while gets no credit for the idle time.
- A requeued trial (an expired lease, a retryable failure) keeps its order: it goes out first.
- ``parallelism`` is untouched: top-ups still queue at most that many trials per search, and only
  queued trials can be claimed.

The order and the virtual time are read and written with the search row locked (top-ups); a race
between two searches' top-ups can only place their trials a little out of turn, never lose one.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ranktune.service.db.models import Search, Trial


def stride(priority: int) -> float:
    """Distance between a search's consecutive trials in the claim order."""
    return 1.0 / max(priority, 1)


def virtual_time(session: Session) -> float:
    """Where claims are now: the lowest order of a never-claimed queued trial; with nothing queued, the
    highest order of a running trial (the latest claims), else the furthest search (idle server)."""
    waiting = session.scalar(
        select(Trial.claim_order)
        .where(Trial.state == "queued", Trial.attempt == 0)
        .order_by(Trial.claim_order)
        .limit(1)
    )
    if waiting is not None:
        return float(waiting)
    latest = session.scalar(
        select(Trial.claim_order).where(Trial.state == "running").order_by(Trial.claim_order.desc()).limit(1)
    )
    if latest is not None:
        return float(latest)
    furthest = session.scalar(select(func.max(Search.next_claim_order)).where(Search.state == "running"))
    return float(furthest or 0.0)


def place(search: Search, priority: int, now: float) -> float:
    """The claim order of the trial ``search`` queues next, given the virtual time ``now``; advances
    the search (its row must be locked)."""
    order = max(float(search.next_claim_order or 0.0), now)
    search.next_claim_order = order + stride(priority)
    return order
