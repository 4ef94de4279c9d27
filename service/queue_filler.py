"""The server's background top-up: keeps each running search's queue filled up to its parallelism.

Requests propose little (a submission ``SUBMIT_PROPOSALS``, a result one trial); this loop proposes
the rest ahead of demand, every ``RANKTUNE_TOP_UP_INTERVAL_S``, in its own asyncio task (the lease
sweep never waits for it) and on a thread of its own. A tick works at most ``TICK_S`` (plus one
proposal), in transactions of at most ``SLICE_S`` each (plus one proposal) that go round the searches
that are short, furthest behind in the fair-share order first: the search row is locked only for a
slice, a result for that search waits at most that long, and the proposer's CPU stays a bounded
share of the server's. Several API processes may run it at once (``repository.refill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI

from ranktune.service.db.repository import refill
from ranktune.service.db.types import utcnow

log = logging.getLogger("ranktune.queue_filler")
TICK_S = 0.5
SLICE_S = 0.05


def fill_once(app: FastAPI, tick_s: float = TICK_S, slice_s: float = SLICE_S) -> int:
    """One tick: propose for the searches short of trials until they are full or ``tick_s`` is spent;
    returns the trials queued."""
    deadline = time.monotonic() + tick_s
    queued = 0
    with app.state.sessions() as session:
        short = refill.short_of_trials(session)
        session.rollback()
        while short and time.monotonic() < deadline:
            for search_id in list(short):
                until = min(deadline, time.monotonic() + slice_s)
                try:
                    added = refill.fill(
                        session, search_id, utcnow(), until=until, wait_ms=refill.FILL_LOCK_WAIT_MS
                    )
                except Exception:  # one search's failure must not starve the others
                    session.rollback()
                    log.exception("queue filler: top-up failed", extra={"search": search_id})
                    added = 0
                if added == 0:  # full, finished, failed, or being filled by another process
                    short.remove(search_id)
                queued += added
                if time.monotonic() >= deadline:
                    break
    return queued


async def queue_filler(app: FastAPI, interval_s: float) -> None:
    """Run ``fill_once`` every ``interval_s`` until cancelled; a failed tick is logged and retried."""
    while True:
        await asyncio.sleep(interval_s)
        tick = asyncio.ensure_future(asyncio.to_thread(fill_once, app))
        try:
            queued = await asyncio.shield(tick)
        except asyncio.CancelledError:  # let the tick end (at most TICK_S) before the engine goes
            with contextlib.suppress(Exception):
                await tick
            raise
        except Exception:  # the database is unreachable: the next tick tries again
            log.exception("queue filler failed; trying again in %.1f s", interval_s)
            continue
        if queued:
            log.info("queued %d trial(s) ahead of demand", queued, extra={"action": "top_up"})
