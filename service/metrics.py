"""Prometheus text exposition: counts from the database plus the claim-latency histogram.

Counts come from the database (every replica reports the same); the histograms are this process's.
"""

from __future__ import annotations

import bisect
import threading
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ranktune.service.db.models import TRIAL_STATES, Lease, Trial, Worker
from ranktune.service.db.types import utcnow

CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SWEEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
WORKER_SEEN_WINDOW_S = 300


class Histogram:
    """A cumulative-bucket histogram, safe to observe from many threads."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    def render(self, name: str, help_text: str) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip((*map(str, self.buckets), "+Inf"), counts, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        lines += [f"{name}_sum {total:.6f}", f"{name}_count {cumulative}"]
        return lines


class ServiceMetrics:
    def __init__(self) -> None:
        self.claim_latency = Histogram(CLAIM_BUCKETS)
        self.lease_sweep = Histogram(SWEEP_BUCKETS)

    def render(self, session: Session) -> str:
        by_state = dict(session.execute(select(Trial.state, func.count()).group_by(Trial.state)).all())
        active = session.scalar(select(func.count()).select_from(Lease).where(Lease.state == "active"))
        workers = session.scalar(select(func.count()).select_from(Worker))
        recent = session.scalar(
            select(func.count())
            .select_from(Worker)
            .where(Worker.last_seen >= utcnow() - timedelta(seconds=WORKER_SEEN_WINDOW_S))
        )
        lines = ["# HELP ranktune_trials Trials by state.", "# TYPE ranktune_trials gauge"]
        lines += [f'ranktune_trials{{state="{s}"}} {by_state.get(s, 0)}' for s in TRIAL_STATES]
        lines += [
            "# HELP ranktune_active_leases Leases currently held by workers.",
            "# TYPE ranktune_active_leases gauge",
            f"ranktune_active_leases {active or 0}",
            "# HELP ranktune_workers_seen Workers ever seen.",
            "# TYPE ranktune_workers_seen gauge",
            f"ranktune_workers_seen {workers or 0}",
            f"# HELP ranktune_workers_recent Workers seen in the last {WORKER_SEEN_WINDOW_S} s.",
            "# TYPE ranktune_workers_recent gauge",
            f"ranktune_workers_recent {recent or 0}",
        ]
        lines += self.claim_latency.render(
            "ranktune_claim_latency_seconds", "Time to answer POST /leases (this process)."
        )
        lines += self.lease_sweep.render(
            "ranktune_lease_sweep_seconds", "Time each expired-lease sweep took (this process)."
        )
        return "\n".join(lines) + "\n"
