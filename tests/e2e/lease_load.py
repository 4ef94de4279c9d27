"""Lease load against a real ``ranktune serve`` process.

``ServeProcess`` runs the server as a deployment does (its own process, tokens checked) and can be
killed with SIGKILL and started again on the same port. ``FakeWorkers`` are asyncio workers that loop
claim -> heartbeat -> complete over HTTP, retry what failed (transport errors, 5xx), sometimes die
holding a lease, and keep a ``Ledger`` of every answer (``lease_audit`` compares it with the rows).
``HoldingWorkers`` claim their leases up front and then only heartbeat and complete them, like GPU
workers in the middle of their proxies; ``dying_leases`` lets other leases expire one by one
meanwhile and times how late the sweep requeues each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ranktune.service.db.engine import make_engine, make_sessionmaker
from ranktune.service.db.repository.tokens import create_token
from ranktune.service.settings import Settings
from tests.service.api import spec

RANKTUNE = str(Path(sys.executable).parent / "ranktune")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_tokens(url: str) -> tuple[str, str]:
    """(admin token, worker token), written straight to the database like ``ranktune token create``."""
    engine = make_engine(Settings(database_url=url))
    try:
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            _, admin = create_token(session, "admin", "admin")
        with sessions() as session:
            _, worker = create_token(session, "workers", "worker")
        return admin, worker
    finally:
        engine.dispose()


class ServeProcess:
    """``ranktune serve`` on a fixed loopback port; ``env`` adds ``RANKTUNE_*`` settings."""

    def __init__(self, url: str, env: dict[str, str] | None = None, source: Path | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "RANKTUNE_DATABASE_URL": url,
            "RANKTUNE_PORT": str(self.port),
            "RANKTUNE_LOG_LEVEL": "warning",
            **(env or {}),
        }
        if source is not None:  # another tree's server code (bench-style comparisons)
            self.env["PYTHONPATH"] = str(source)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> float:
        """Start and wait until /healthz answers 200; returns the seconds that took."""
        started = time.monotonic()
        self.process = subprocess.Popen([RANKTUNE, "serve"], env=self.env, cwd=ROOT)
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"ranktune serve exited with {self.process.returncode}")
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"ranktune serve did not answer on {self.base} in {timeout_s:.0f} s")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; whatever was in flight is lost."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def __enter__(self) -> ServeProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def submit(base: str, token: str, **overrides: Any) -> dict[str, Any]:
    body = spec(**{"strategy": "uniform", "max_trials": 10_000, "parallelism": 128, **overrides})
    response = httpx.post(
        f"{base}/api/v1/searches", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def accuracy_of(trial_id: int, attempt: int) -> float:
    """The metric a fake worker reports: distinct per attempt, so a stored value says which one won."""
    return ((trial_id * 7919 + attempt * 104_729) % 10_007) / 10_007


@dataclass(frozen=True)
class Held:
    lease_id: str
    trial_id: int
    attempt: int


@dataclass
class Ledger:
    """What the workers were told."""

    claims: list[Held] = field(default_factory=list)
    completed: dict[str, Held] = field(default_factory=dict)  # lease id -> the lease, answered 2xx
    refused: list[Held] = field(default_factory=list)  # complete answered 404/409 (lease gone)
    abandoned: list[Held] = field(default_factory=list)  # the worker "died" holding it
    stopped: list[Held] = field(default_factory=list)  # a heartbeat said stop
    answers: Counter[str] = field(default_factory=Counter)  # "claim 200", "complete 503", "heartbeat -"

    def failed(self) -> Counter[str]:
        """Answers that made a worker retry: transport errors ("-") and 5xx."""
        return Counter({k: n for k, n in self.answers.items() if k.endswith(" -") or k[-3] == "5"})


class FakeWorkers:
    """``count`` asyncio workers, one HTTP client each, looping until ``stop`` is set.

    Every ``abandon_every``-th lease of a worker (staggered across workers) is abandoned after its
    heartbeat (a worker that dies); a transport error during a heartbeat makes the even-numbered
    workers abandon their lease too (they died with the server) while the odd ones retry. A complete
    is retried until the server gives a definite answer (2xx, or 404/409 when the lease is gone), as
    the real worker's spool does.
    """

    def __init__(
        self, base: str, token: str, count: int, abandon_every: int = 0, pause_s: float = 0.1
    ) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.count = count
        self.abandon_every = abandon_every
        self.pause_s = pause_s
        self.ledger = Ledger()

    @property
    def cycles(self) -> int:
        return len(self.ledger.completed)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._worker(i, stop) for i in range(self.count)))

    async def _post(self, client: httpx.AsyncClient, kind: str, path: str, body: object) -> tuple[int, Any]:
        """(status, JSON answer); status 0 for a transport error. Counted in the ledger."""
        try:
            response = await client.post(path, json=body)
        except httpx.TransportError:
            self.ledger.answers[f"{kind} -"] += 1
            return 0, None
        self.ledger.answers[f"{kind} {response.status_code}"] += 1
        try:
            return response.status_code, response.json() if response.content else None
        except ValueError:
            return response.status_code, None

    async def _worker(self, index: int, stop: asyncio.Event) -> None:
        worker = {"name": f"fake-{index}", "device": "cpu", "hostname": "load"}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=f"{self.base}/api/v1", headers=self.headers, timeout=15, limits=limits
        ) as client:
            claimed = 0
            while not stop.is_set():
                status, job = await self._post(client, "claim", "/leases", {"worker": worker})
                if status != 200:
                    await asyncio.sleep(0.2 if status == 204 else self.pause_s)
                    continue
                held = Held(job["lease_id"], job["trial_id"], job["attempt"])
                self.ledger.claims.append(held)
                claimed += 1
                if not await self._heartbeat(client, held, died_with_server=index % 2 == 0):
                    continue
                if self.abandon_every and (claimed + index) % self.abandon_every == 0:  # staggered
                    self.ledger.abandoned.append(held)
                    continue
                await self._complete(client, held)

    async def _heartbeat(self, client: httpx.AsyncClient, held: Held, died_with_server: bool) -> bool:
        """True when the worker goes on to complete the lease."""
        body = {
            "attempt": held.attempt,
            "step": 5,
            "total_steps": 10,
            "measurements": [{"step": 5, "loss": 1.0}],
        }
        while True:
            status, answer = await self._post(client, "heartbeat", f"/leases/{held.lease_id}/heartbeat", body)
            if status == 200:
                if answer["action"] == "stop":
                    self.ledger.stopped.append(held)
                    return False
                return True
            if status == 0 and died_with_server:
                self.ledger.abandoned.append(held)
                return False
            if status in (404, 409):
                self.ledger.stopped.append(held)
                return False
            await asyncio.sleep(self.pause_s)

    async def _complete(self, client: httpx.AsyncClient, held: Held) -> None:
        body = {"attempt": held.attempt, "metrics": {"accuracy": accuracy_of(held.trial_id, held.attempt)}}
        while True:
            status, _ = await self._post(client, "complete", f"/leases/{held.lease_id}/complete", body)
            if 200 <= status < 300:
                self.ledger.completed[held.lease_id] = held
                return
            if status in (404, 409):
                self.ledger.refused.append(held)
                return
            await asyncio.sleep(self.pause_s)


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


class HoldingWorkers:
    """``count`` workers that each claim ``leases_each`` leases, then only heartbeat and complete them.

    With no claim in flight the claim's own reap never runs: only the sweep can expire a lease.
    Each worker completes one of its leases every ``complete_every`` heartbeats.
    """

    def __init__(
        self,
        base: str,
        token: str,
        count: int,
        leases_each: int,
        complete_every: int = 4,
        name: str = "holder",
    ) -> None:
        self.base, self.headers, self.name = base, {"Authorization": f"Bearer {token}"}, name
        self.count, self.leases_each, self.complete_every = count, leases_each, complete_every
        self.held: list[list[Held]] = [[] for _ in range(count)]
        self.answers: Counter[str] = Counter()
        self.ended = 0.0  # when the last worker ran out of leases or was stopped

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.base}/api/v1", headers=self.headers, timeout=30)

    async def claim_all(self) -> None:
        async def claim(index: int) -> None:
            worker = {"name": f"{self.name}-{index}", "device": "cpu", "hostname": "load"}
            async with self.client() as client:
                deadline = time.monotonic() + 60
                while len(self.held[index]) < self.leases_each:
                    response = await client.post("/leases", json={"worker": worker})
                    if response.status_code == 204 and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)  # proposals still being made
                        continue
                    assert response.status_code == 200, (response.status_code, response.text)
                    job = response.json()
                    self.held[index].append(Held(job["lease_id"], job["trial_id"], job["attempt"]))

        await asyncio.gather(*(claim(i) for i in range(self.count)))

    async def run(self, stop: asyncio.Event) -> None:
        async def hold(index: int) -> None:
            leases, turn = self.held[index], 0
            async with self.client() as client:
                while leases and not stop.is_set():
                    turn += 1
                    held = leases[turn % len(leases)]
                    if turn % self.complete_every == 0:
                        leases.remove(held)
                        path, body = "complete", {"attempt": held.attempt, "metrics": {"accuracy": 0.5}}
                    else:
                        measurements = [{"step": turn, "loss": 1.0 / turn}]
                        path = "heartbeat"
                        body = {"attempt": held.attempt, "step": turn, "measurements": measurements}
                    response = await client.post(f"/leases/{held.lease_id}/{path}", json=body)
                    self.answers[f"{path} {response.status_code}"] += 1

        await asyncio.gather(*(hold(i) for i in range(self.count)))
        self.ended = time.monotonic()


@dataclass
class Expiry:
    trial_id: int
    expires_at: datetime  # as the last successful heartbeat set it (server clock)
    requeued_seen: datetime | None = None  # first time the trial was seen queued again


async def dying_leases(
    base: str, token: str, jobs: list[Held], spacing_s: float, poll: Any
) -> tuple[list[Expiry], Counter[str]]:
    """Heartbeat lease ``i`` of ``jobs`` once, ``i * spacing_s`` from now, and never again, so they
    expire one by one, while ``poll()`` (-> ids of the queued trials) watches for their trials to be
    queued again. Returns when all are, or 15 s after the last heartbeat; also the heartbeats' answers.
    """
    expiries: dict[int, Expiry] = {}
    answers: Counter[str] = Counter()
    done = threading.Event()

    def watch() -> None:  # a thread: the event loop, busy with the load, would delay what it sees
        while not done.wait(0.02):
            queued = poll()
            seen = datetime.now(UTC)
            for trial_id in queued:
                expiry = expiries.get(trial_id)
                if expiry is not None and expiry.requeued_seen is None:
                    expiry.requeued_seen = seen

    async def last_heartbeat(client: httpx.AsyncClient, index: int, held: Held) -> None:
        await asyncio.sleep(index * spacing_s)
        body = {"attempt": held.attempt, "step": 1}
        response = await client.post(f"/leases/{held.lease_id}/heartbeat", json=body)
        answer = response.json() if response.status_code == 200 else {}
        answers[f"{response.status_code} {answer.get('action')}"] += 1
        if answer.get("action") == "continue":  # else it expired before its turn: no sample
            expiries[held.trial_id] = Expiry(held.trial_id, datetime.fromisoformat(answer["expires_at"]))

    watcher = threading.Thread(target=watch, name="requeue-watcher")
    watcher.start()
    async with httpx.AsyncClient(
        base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as client:
        await asyncio.gather(*(last_heartbeat(client, i, held) for i, held in enumerate(jobs)))
    deadline = time.monotonic() + 15
    while any(e.requeued_seen is None for e in expiries.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    done.set()
    await asyncio.to_thread(watcher.join)
    return list(expiries.values()), answers
