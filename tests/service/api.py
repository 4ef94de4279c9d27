"""A thin test client over the REST API: builds request bodies, and asserts no 5xx ever comes back."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.orm import Session

from ranktune.service.settings import Settings

SPEC: dict[str, Any] = {
    "name": "demo",
    "model": "builtin:tiny-vlm",
    "task": "builtin:digits-vqa",
    "method": {"kind": "lora"},
    "budget": {"rank": 8},
    "space": {"grid": [0, 2, 4, 8, 16, 32], "towers": ["vision", "projector", "language"], "layer_groups": 4},
    "strategy": "random",
    "max_trials": 24,
    "parallelism": 4,
    "proxy": {"steps": 200, "lr": 0.001, "batch_size": 32, "seed": 0, "eval_every": 50},
    "objective": {"metric": "accuracy", "direction": "maximize"},
    "max_attempts": 3,
    "lease_ttl_s": 120,
}
WORKER = {"name": "gpu-0", "device": "cuda:0", "hostname": "node-1"}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "host": "127.0.0.1",
        "reap_interval_s": 0,  # tests reap explicitly
        "top_up_interval_s": 0,  # and fill queues explicitly (service.queue_filler.fill_once)
        "lease_ttl_s": 60,
        "heartbeat_interval_s": 5,
    }
    return Settings(**{**values, **overrides})


# A search small enough to run end to end on a tiny model in a test: 2 proxy steps of batch 4.
SMALL: dict[str, Any] = {
    "budget": {"rank": 4},
    "space": {"grid": [0, 2, 4, 8], "layer_groups": 2},
    "proxy": {"steps": 2, "lr": 0.001, "batch_size": 4, "seed": 0, "eval_every": 0},
}


def spec(**overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(SPEC)
    body.update(overrides)
    return body


class Api:
    """Requests against the app; every answer is checked to be below 500."""

    def __init__(self, client: httpx.Client, app: FastAPI | None = None, token: str | None = None) -> None:
        self.client = client
        self.app = app
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def with_token(self, token: str | None) -> Api:
        return Api(self.client, self.app, token)

    def session(self) -> Session:
        assert self.app is not None
        session: Session = self.app.state.sessions()
        return session

    def request(self, method: str, path: str, body: Any = None, raw: str | None = None) -> httpx.Response:
        headers = dict(self.headers)
        content = None
        if raw is not None:
            content, headers["Content-Type"] = raw, "application/json"
        elif body is not None:
            content, headers["Content-Type"] = json.dumps(body), "application/json"
        response = self.client.request(method, path, content=content, headers=headers)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", f"/api/v1{path}")

    def post(self, path: str, body: Any = None, raw: str | None = None) -> httpx.Response:
        return self.request("POST", f"/api/v1{path}", body, raw)

    def submit(self, **overrides: Any) -> dict[str, Any]:
        response = self.post("/searches", spec(**overrides))
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    def claim(self, worker: str = "gpu-0") -> dict[str, Any] | None:
        response = self.post("/leases", {"worker": {**WORKER, "name": worker}})
        if response.status_code == 204:
            assert int(response.headers["Retry-After"]) >= 1
            return None
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def heartbeat(self, job: dict[str, Any], step: int = 10, **extra: Any) -> httpx.Response:
        body = {"attempt": job["attempt"], "step": step, "total_steps": 200, **extra}
        return self.post(f"/leases/{job['lease_id']}/heartbeat", body)

    def complete(self, job: dict[str, Any], accuracy: float = 0.5, **extra: Any) -> httpx.Response:
        body = {"attempt": job["attempt"], "metrics": {"accuracy": accuracy, "loss": 0.1}, **extra}
        return self.post(f"/leases/{job['lease_id']}/complete", body)

    def fail(
        self, job: dict[str, Any], reason: str = "out of memory", retryable: bool = True
    ) -> httpx.Response:
        body = {"attempt": job["attempt"], "reason": reason, "retryable": retryable}
        return self.post(f"/leases/{job['lease_id']}/fail", body)

    def search(self, search_id: int) -> dict[str, Any]:
        response = self.get(f"/searches/{search_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def trials(self, search_id: int, schedules: bool = False) -> list[dict[str, Any]]:
        suffix = "?include_schedule=true" if schedules else ""
        response = self.get(f"/searches/{search_id}/trials{suffix}")
        assert response.status_code == 200, response.text
        trials: list[dict[str, Any]] = response.json()["trials"]
        return trials
