"""The worker's HTTP client: the lease endpoints, with backoff while the server is unreachable."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("ranktune.worker")

RETRYABLE_STATUS = {502, 503, 504}


class ServerRejected(Exception):
    """The server answered with a 4xx that retrying will not change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"server answered {status}: {detail}")
        self.status = status


@dataclass
class Backoff:
    first_s: float = 1.0
    max_s: float = 30.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.max_s, self.first_s * 2**self.attempts)
        self.attempts += 1
        return delay * (0.5 + random.random() / 2)

    def reset(self) -> None:
        self.attempts = 0


class LeaseClient:
    def __init__(self, server: str, token: str | None, timeout_s: float = 30.0,
                 should_give_up: Callable[[], bool] = lambda: False) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=server.rstrip("/") + "/api/v1", headers=headers, timeout=timeout_s)
        self.should_give_up = should_give_up

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any], retry: bool = True) -> httpx.Response:
        return self._request("POST", path, retry, json=body)

    def _request(self, method: str, path: str, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """A request with backoff on connection errors and 5xx; 4xx raise ServerRejected (except 204)."""
        backoff = Backoff()
        while True:
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                if not retry or self.should_give_up():
                    raise
                delay = backoff.next_delay()
                log.warning("action=unreachable path=%s error=%r retry_in=%.1fs", path, e, delay)
                time.sleep(delay)
                continue
            if response.status_code in RETRYABLE_STATUS and retry and not self.should_give_up():
                delay = backoff.next_delay()
                log.warning(
                    "action=server_busy path=%s status=%s retry_in=%.1fs", path, response.status_code, delay
                )
                time.sleep(delay)
                continue
            if response.status_code >= 400:
                raise ServerRejected(response.status_code, response.text[:500])
            return response

    def claim(self, worker: dict[str, str]) -> tuple[dict[str, Any] | None, float]:
        """A job, or None with the seconds the server asks us to wait."""
        response = self._post("/leases", {"worker": worker})
        if response.status_code == 204:
            return None, float(response.headers.get("Retry-After", "5"))
        return response.json(), 0.0

    def heartbeat(self, lease_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"/leases/{lease_id}/heartbeat", body, retry=False).json()

    def report(self, lease_id: str, kind: str, body: dict[str, Any]) -> None:
        self._post(f"/leases/{lease_id}/{kind}", body)

    def upload_adapter(self, lease_id: str, attempt: int, archive: bytes) -> None:
        """PUT a confirmation run's adapter zip (before completing the attempt)."""
        self._request(
            "PUT",
            f"/leases/{lease_id}/adapter",
            params={"attempt": attempt},
            content=archive,
            headers={"Content-Type": "application/zip"},
        )

    def upload_checkpoint(self, lease_id: str, attempt: int, steps: int, state: bytes) -> None:
        """PUT a rung's training state (before completing the attempt), for its promotion to go on from."""
        self._request(
            "PUT",
            f"/leases/{lease_id}/checkpoint",
            params={"attempt": attempt, "steps": steps},
            content=state,
            headers={"Content-Type": "application/octet-stream"},
        )

    def download_checkpoint(self, lease_id: str) -> bytes:
        """The training state this lease's trial goes on from (Job.resume)."""
        return self._request("GET", f"/leases/{lease_id}/checkpoint").content
