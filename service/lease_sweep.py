"""The expired-lease sweep of an API process: a thread of its own on a fixed schedule.

Nothing else runs on that thread (the Optuna mirror is ``ranktune optuna-sync``, a process of its
own), so an expired lease is back in the queue within one interval plus one sweep, however busy the
event loop, the request threads or another background task are. Waiting behind them is how the
sweep used to fall 16-71 s behind: it ran on the event loop's default executor after the mirror.

On PostgreSQL the sweep also has a database connection of its own: under load the request threads
(``RANKTUNE_REQUEST_THREADS``, more than the pool holds) can keep every pooled connection busy, and
the sweep would queue for one. On SQLite it shares the app's sessions on purpose: every write takes
the process's one writer lock anyway, and a second connection would only move the sweep's wait from
that lock, which hands over at once, into SQLite's busy handler, which sleeps.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ranktune.service.db import leases as lease_protocol
from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.types import utcnow
from ranktune.service.metrics import Histogram
from ranktune.service.settings import Settings

log = logging.getLogger("ranktune.sweep")


class LeaseSweep:
    """Every ``interval_s``, expire overdue leases (``leases.reap_expired``) even when no worker claims.

    ``start`` and ``stop`` are called once each, from the app's lifespan. A failed sweep (database
    down, writer lock busy) is logged and the schedule goes on: the next one retries.
    """

    def __init__(
        self,
        settings: Settings,
        app_sessions: sessionmaker[Session],
        durations: Histogram | None = None,
    ) -> None:
        self.interval_s = settings.reap_interval_s
        self.durations = durations
        self._engine: Engine | None = None
        if settings.is_sqlite:
            self._sessions = app_sessions
        else:
            self._engine = make_engine(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}))
            self._sessions = make_sessionmaker(self._engine)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._engine is not None:
            self._engine.dispose()

    def sweep_once(self) -> int:
        """One sweep; returns how many leases it expired (0 when it failed)."""
        started = time.perf_counter()
        try:
            with self._sessions() as session:
                reaped = lease_protocol.reap_expired(session, utcnow())
        except Exception:  # the sweep must outlive any one failure: the next one retries
            log.exception(
                "lease sweep failed; trying again in %.1f s", self.interval_s, extra={"action": "reap"}
            )
            return 0
        finally:
            if self.durations is not None:
                self.durations.observe(time.perf_counter() - started)
        if reaped:
            log.info("expired %d lease(s)", reaped, extra={"action": "reap"})
        return reaped

    def _run(self) -> None:
        # A fixed rate, not a pause after each sweep: a slow sweep does not push the next ones back,
        # and after an overrun the next starts at once instead of making up the missed ones.
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.sweep_once()
            due = max(due + self.interval_s, time.monotonic())
