"""32 workers claim, heartbeat and complete through a real uvicorn server at once, while its queue
filler and claims that find nothing queued propose trials: every trial is claimed exactly once, the
search never overshoots ``parallelism`` or ``max_trials``."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
from fastapi.testclient import TestClient

from ranktune.service.app import create_app
from ranktune.service.settings import Settings
from tests.service.api import WORKER, spec
from tests.service.server import LiveServer

THREADS = 32
MAX_TRIALS = 96


def worker_loop(base: str, name: str, claimed: list[tuple[int, int]], errors: list[str]) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        idle = 0
        while idle < 3:
            response = client.post("/api/v1/leases", json={"worker": {**WORKER, "name": name}})
            if response.status_code == 204:
                idle += 1
                continue
            if response.status_code != 200:
                errors.append(f"claim {response.status_code} {response.text}")
                return
            idle = 0
            job: dict[str, Any] = response.json()
            claimed.append((job["trial_id"], job["attempt"]))
            lease = f"/api/v1/leases/{job['lease_id']}"
            beat = client.post(f"{lease}/heartbeat", json={"attempt": job["attempt"], "step": 1})
            if beat.status_code != 200 or beat.json()["action"] != "continue":
                errors.append(f"heartbeat {beat.status_code} {beat.text}")
            done = client.post(
                f"{lease}/complete", json={"attempt": job["attempt"], "metrics": {"accuracy": 0.5}}
            )
            if done.status_code != 200:
                errors.append(f"complete {done.status_code} {done.text}")


def test_32_workers_claim_every_trial_exactly_once(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        response = client.post("/api/v1/searches", json=spec(max_trials=MAX_TRIALS, parallelism=24))
        assert response.status_code == 201, response.text
        search_id = response.json()["id"]
    with LiveServer(create_app(settings.model_copy(update={"top_up_interval_s": 0.05}))) as server:
        claimed: list[tuple[int, int]] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=worker_loop, args=(server.url, f"w{i}", claimed, errors))
            for i in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        with httpx.Client(base_url=server.url) as http:
            search = http.get(f"/api/v1/searches/{search_id}").json()
            workers = http.get("/api/v1/workers").json()["workers"]
    assert errors == []
    assert len(claimed) == MAX_TRIALS
    assert Counter(claimed).most_common(1)[0][1] == 1, "a trial attempt was handed out twice"
    assert {attempt for _, attempt in claimed} == {1}
    assert search["state"] == "finished" and search["trials"]["succeeded"] == MAX_TRIALS
    assert sum(w["trials_done"] for w in workers) == MAX_TRIALS
