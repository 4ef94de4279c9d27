"""The expired-lease sweep runs on its own schedule: a blocked event loop, a failed sweep or (on
PostgreSQL) a pool whose every connection is busy does not hold it up."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ranktune.service.app import create_app
from ranktune.service.db import leases as lease_protocol
from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.models import Lease, Trial
from ranktune.service.db.types import utcnow
from ranktune.service.lease_sweep import LeaseSweep
from ranktune.service.metrics import SWEEP_BUCKETS, Histogram
from tests.service.api import Api, make_settings


def claim_one(api: Api) -> dict:
    api.submit(max_trials=1, parallelism=1)
    job = api.claim()
    assert job is not None
    return job


def expire(sessions: sessionmaker[Session], lease_id: str) -> None:
    """Move the lease's expiry into the past, straight in the database."""
    with sessions() as session:
        lease = session.get(Lease, lease_id)
        assert lease is not None
        lease.expires_at = utcnow() - timedelta(seconds=1)
        session.commit()


def trial_state(sessions: sessionmaker[Session], trial_id: int) -> str:
    with sessions() as session:
        trial = session.get(Trial, trial_id)
        assert trial is not None
        return trial.state


def wait_for_state(sessions: sessionmaker[Session], trial_id: int, state: str, timeout_s: float) -> float:
    """Seconds until the trial is in ``state``; fails after ``timeout_s``."""
    start = time.monotonic()
    while trial_state(sessions, trial_id) != state:
        assert time.monotonic() - start < timeout_s, f"trial {trial_id} not {state} after {timeout_s} s"
        time.sleep(0.02)
    return time.monotonic() - start


def test_the_sweep_runs_while_the_event_loop_is_blocked(database_url: str) -> None:
    app = create_app(make_settings(database_url, reap_interval_s=0.1))
    with TestClient(app) as client:
        job = claim_one(Api(client, app))

        async def block_the_loop() -> None:
            time.sleep(2.0)  # e.g. a slow synchronous call on the loop: nothing else runs on it

        assert client.portal is not None
        client.portal.start_task_soon(block_the_loop)
        time.sleep(0.1)
        expire(app.state.sessions, job["lease_id"])
        assert wait_for_state(app.state.sessions, job["trial_id"], "queued", timeout_s=1.0) < 1.0


def test_the_sweep_goes_on_after_a_failure(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = lease_protocol.reap_expired, []

    def failing_twice(session: Session, now: datetime) -> int:
        calls.append(now)
        if len(calls) <= 2:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return real(session, now)

    monkeypatch.setattr(lease_protocol, "reap_expired", failing_twice)
    settings = make_settings(database_url, reap_interval_s=0.05)
    engine = make_engine(settings)
    durations = Histogram(SWEEP_BUCKETS)
    sweep = LeaseSweep(settings, make_sessionmaker(engine), durations)
    sweep.start()
    try:
        deadline = time.monotonic() + 10
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sweep.stop()
        engine.dispose()
    assert len(calls) >= 4, "the sweep stopped after a failure"
    assert "x_count 0" not in durations.render("x", "every sweep is timed, failed ones too")


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_sweep_does_not_queue_for_the_apps_connection_pool(database_url: str) -> None:
    app = create_app(make_settings(database_url, reap_interval_s=0.1, db_pool_size=2, db_max_overflow=0))
    with TestClient(app) as client:
        job = claim_one(Api(client, app))
        held = [app.state.engine.connect() for _ in range(2)]  # every connection of the app's pool
        reader = make_engine(make_settings(database_url))  # the test reads through a pool of its own
        try:
            expire(make_sessionmaker(reader), job["lease_id"])
            assert wait_for_state(make_sessionmaker(reader), job["trial_id"], "queued", 3.0) < 3.0
        finally:
            for connection in held:
                connection.close()
            reader.dispose()
