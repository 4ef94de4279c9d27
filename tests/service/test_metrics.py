"""Prometheus metrics, structured logs and the background lease reaper."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.db.models import Lease, Trial
from ranktune.service.db.types import utcnow
from ranktune.service.logs import JsonFormatter, KeyValueFormatter
from tests.service.api import Api, make_settings


def test_metrics_count_trials_leases_workers_and_claims(api: Api) -> None:
    api.submit(parallelism=3)
    assert api.claim() is not None
    text = api.request("GET", "/metrics").text
    for line in (
        'ranktune_trials{state="queued"} 2',
        'ranktune_trials{state="running"} 1',
        "ranktune_active_leases 1",
        "ranktune_workers_seen 1",
        "ranktune_workers_recent 1",
        "ranktune_claim_latency_seconds_count 1",
        'ranktune_claim_latency_seconds_bucket{le="+Inf"} 1',
    ):
        assert line in text.splitlines(), line
    assert "# TYPE ranktune_claim_latency_seconds histogram" in text


def test_background_reaper_requeues_expired_leases(database_url: str) -> None:
    app = create_app(make_settings(database_url, reap_interval_s=0.1))
    with TestClient(app) as client:
        api = Api(client, app)
        api.submit(max_trials=1, parallelism=1)
        job = api.claim()
        assert job is not None
        with api.session() as session:
            lease = session.get(Lease, job["lease_id"])
            assert lease is not None
            lease.expires_at = utcnow() - timedelta(seconds=1)
            session.commit()
        deadline = time.monotonic() + 10
        state = "running"
        while state == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
            with api.session() as session:
                trial = session.get(Trial, job["trial_id"])
                assert trial is not None
                state = trial.state
        assert state == "queued"


def test_log_lines_carry_search_trial_worker() -> None:
    record = logging.LogRecord("ranktune.leases", logging.INFO, __file__, 1, "claimed %s", ("x",), None)
    record.__dict__.update(action="claim", search=3, trial=17, worker="gpu-0")
    line = KeyValueFormatter().format(record)
    assert "action=claim search=3 trial=17 worker=gpu-0" in line and 'msg="claimed x"' in line
    data = json.loads(JsonFormatter().format(record))
    assert data["search"] == 3 and data["trial"] == 17 and data["worker"] == "gpu-0"
    assert data["msg"] == "claimed x"
