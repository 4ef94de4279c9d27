"""What a lease load left in the database, compared with what the workers were told (``Ledger``).

The promises checked: each complete answered 2xx is persisted once, with that attempt's metric; no
trial succeeds twice, or without a worker having been told so; a trial's attempt counts its leases
(1..attempt, one lease each) and it holds at most one active lease; every expired lease's trial was
reissued or is queued again; no lease stays active 2 s past its expiry.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from ranktune.service.db.engine import make_engine
from ranktune.service.db.models import Lease, Trial
from ranktune.service.settings import Settings
from tests.e2e.lease_load import Held, Ledger, accuracy_of


@dataclass
class Rows:
    trials: dict[int, dict[str, Any]]  # id -> state, attempt, accuracy
    leases: list[dict[str, Any]]  # id, trial_id, attempt, state, expires_at, ended_at


def read_rows(url: str, search_ids: list[int]) -> Rows:
    engine = make_engine(Settings(database_url=url))
    try:
        with engine.connect() as connection:
            trials = {
                row.id: {
                    "state": row.state,
                    "attempt": row.attempt,
                    "accuracy": (row.metrics or {}).get("accuracy"),
                }
                for row in connection.execute(
                    select(Trial.id, Trial.state, Trial.attempt, Trial.metrics).where(
                        Trial.search_id.in_(search_ids)
                    )
                )
            }
            leases = [
                dict(row._mapping)
                for row in connection.execute(
                    select(
                        Lease.id, Lease.trial_id, Lease.attempt, Lease.state, Lease.expires_at, Lease.ended_at
                    )
                    .join(Trial, Trial.id == Lease.trial_id)
                    .where(Trial.search_id.in_(search_ids))
                )
            ]
        return Rows(trials, leases)
    finally:
        engine.dispose()


def active_leases(url: str, search_ids: list[int]) -> int:
    return sum(1 for lease in read_rows(url, search_ids).leases if lease["state"] == "active")


@dataclass
class Audit:
    counts: dict[str, int]
    problems: list[str]

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        problems = "; ".join(self.problems[:10]) + (" …" if len(self.problems) > 10 else "")
        return counts + (f" | PROBLEMS: {problems}" if self.problems else "")


def audit(url: str, search_ids: list[int], ledger: Ledger) -> Audit:
    rows = read_rows(url, search_ids)
    told: dict[int, set[int]] = defaultdict(set)
    for held in ledger.completed.values():
        told[held.trial_id].add(held.attempt)
    succeeded = {tid for tid, t in rows.trials.items() if t["state"] == "succeeded"}
    by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for lease in rows.leases:
        by_trial[lease["trial_id"]].append(lease)
    problems = _told_versus_stored(rows, told, succeeded, by_trial) + _attempts(rows, by_trial)
    double_claims = sum(n - 1 for n in Counter((h.trial_id, h.attempt) for h in ledger.claims).values())
    if double_claims:
        problems.append(f"{double_claims} trial attempts handed to two workers")
    expired = [lease for lease in rows.leases if lease["state"] == "expired"]
    reissued = sum(1 for lease in expired if lease["attempt"] < rows.trials[lease["trial_id"]]["attempt"])
    requeued = sum(
        1
        for lease in expired
        if lease["attempt"] == rows.trials[lease["trial_id"]]["attempt"]
        and rows.trials[lease["trial_id"]]["state"] == "queued"
    )
    if reissued + requeued != len(expired):
        problems.append(f"{len(expired) - reissued - requeued} expired leases neither reissued nor requeued")
    late = datetime.now(UTC) - timedelta(seconds=2)
    overdue = sum(1 for lease in rows.leases if lease["state"] == "active" and lease["expires_at"] < late)
    if overdue:
        problems.append(f"{overdue} leases still active more than 2 s after their expiry")
    counts = {
        "claims answered": len(ledger.claims),
        "completes answered 2xx": len(ledger.completed),
        "succeeded trials": len(succeeded),
        "completes refused (lease gone)": len(ledger.refused),
        "leases abandoned": len(ledger.abandoned),
        "expired leases": len(expired),
        "reissued": reissued,
        "requeued, not yet reissued": requeued,
        "requests retried": sum(ledger.failed().values()),
    }
    return Audit(counts, problems)


def _told_versus_stored(
    rows: Rows, told: dict[int, set[int]], succeeded: set[int], by_trial: dict[int, list[dict[str, Any]]]
) -> list[str]:
    problems = []
    if twice := sorted(tid for tid, attempts in told.items() if len(attempts) > 1):
        problems.append(f"trials answered 2xx for two attempts: {twice[:5]}")
    if lost := sorted(set(told) - succeeded):
        problems.append(f"2xx completes not persisted as succeeded: trials {lost[:5]}")
    if untold := sorted(succeeded - set(told)):
        problems.append(f"succeeded without any worker told so: trials {untold[:5]}")
    for tid in sorted(succeeded & set(told)):
        attempt, trial = min(told[tid]), rows.trials[tid]
        completed = [lease["attempt"] for lease in by_trial[tid] if lease["state"] == "completed"]
        if completed != [attempt]:
            problems.append(
                f"trial {tid}: completed leases of attempts {completed}, a worker was told {attempt}"
            )
        if trial["accuracy"] != accuracy_of(tid, attempt):
            problems.append(f"trial {tid}: stored metric {trial['accuracy']} is not attempt {attempt}'s")
        if trial["attempt"] != attempt:
            problems.append(f"trial {tid}: attempt {trial['attempt']} after attempt {attempt} succeeded")
    return problems


def _attempts(rows: Rows, by_trial: dict[int, list[dict[str, Any]]]) -> list[str]:
    problems = []
    for tid, trial in rows.trials.items():
        attempts = sorted(lease["attempt"] for lease in by_trial[tid])
        if attempts != list(range(1, trial["attempt"] + 1)):
            problems.append(f"trial {tid}: attempt {trial['attempt']} but leases of attempts {attempts}")
        if sum(lease["state"] == "active" for lease in by_trial[tid]) > 1:
            problems.append(f"trial {tid}: two active leases")
    return problems


async def late_completes(
    base: str, token: str, abandoned: list[Held], rows: Rows, limit: int = 5
) -> Counter[int]:
    """Resend the complete of abandoned leases whose trial went on to a later attempt (each must be
    refused, 409, and change nothing); returns the statuses."""
    statuses: Counter[int] = Counter()
    stale = [h for h in abandoned if rows.trials[h.trial_id]["attempt"] > h.attempt][:limit]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", headers=headers, timeout=15) as client:
        for held in stale:
            body = {"attempt": held.attempt, "metrics": {"accuracy": 0.123}}
            response = await client.post(f"/leases/{held.lease_id}/complete", json=body)
            statuses[response.status_code] += 1
    return statuses
