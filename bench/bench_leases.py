"""Lease throughput: claim + heartbeat + complete cycles per second with 64 concurrent workers.

Three phases, each bounded in time, all on loopback:
1. ranktune on PostgreSQL: ``ranktune serve`` in a subprocess, 64 worker threads each looping
   claim -> heartbeat -> complete over HTTP;
2. the same against ranktune on SQLite (the embedded default's engine, WAL);
3. Optuna's RDBStorage on the same PostgreSQL: 64 threads looping ``study.ask()`` -> ``study.tell()``
   (what Optuna's own distributed optimisation does per trial; no HTTP in between).

Workers are threads with one keep-alive stdlib HTTP connection each: cheap enough that the load
generator does not starve the server of the 2 cores they share (an asyncio httpx client used most
of a core by itself). Reports cycles/s, p50/p99 latency per request and per cycle, and double
claims (a trial attempt handed to two workers; must be zero, checked in the answers and in the
database afterwards).

Run: .venv/bin/python bench/bench_leases.py [--seconds 15] [--workers 64] [--write]
``--write`` appends the table, the command and the date to bench/RESULTS.md under "## Leases".
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.db.migrate import upgrade_settings
from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
RANKTUNE = str(Path(sys.executable).parent / "ranktune")
POSTGRES_ADMIN_URL = os.environ.get(
    "RANKTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
WORKER = {"device": "cpu", "hostname": "bench"}
SPEC = {
    "name": "bench",
    "model": "builtin:tiny-vlm",
    "task": "builtin:digits-vqa",
    "strategy": "uniform",  # proposing costs ~0.3 ms either way; uniform keeps the bench about leases
    "max_trials": 10_000,
    "parallelism": 256,
    "lease_ttl_s": 600,
}


@dataclass
class Phase:
    name: str
    cycles: int = 0
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"claim": [], "heartbeat": [], "complete": [], "cycle": []}
    )
    claims: list[tuple[int, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    db_double_claims: int = 0

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    @property
    def double_claims(self) -> int:
        return sum(n - 1 for n in Counter(self.claims).values() if n > 1) + self.db_double_claims


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def migrate(url: str) -> None:
    upgrade_settings(Settings(database_url=url))


class Server:
    """``ranktune serve`` in its own process (its own GIL, like a real deployment)."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "RANKTUNE_DATABASE_URL": url,
            "RANKTUNE_PORT": str(self.port),
            "RANKTUNE_LOG_LEVEL": "warning",
        }
        self.process = subprocess.Popen([RANKTUNE, "serve"], env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"ranktune serve did not start on {self.base}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Http:
    """One keep-alive connection per worker thread (stdlib http.client: the load generator must
    cost far less CPU than the server it measures; both share the same 2 cores)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: object) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        try:
            self.connection.request("POST", path, body=json.dumps(body), headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        return response.status, (json.loads(data) if data else None)


def lease_cycle(client: Http, name: str, phase: Phase, lock: threading.Lock) -> None:
    start = time.perf_counter()
    status, job = client.post("/api/v1/leases", {"worker": {**WORKER, "name": name}})
    t_claim = time.perf_counter()
    if status != 200:
        with lock:
            phase.errors[f"claim {status}"] += 1
        time.sleep(0.05)
        return
    lease = f"/api/v1/leases/{job['lease_id']}"
    beat = {
        "attempt": job["attempt"],
        "step": 100,
        "total_steps": 200,
        "measurements": [{"step": 100, "loss": 0.5}],
    }
    beat_status, _ = client.post(f"{lease}/heartbeat", beat)
    t_beat = time.perf_counter()
    result = {"attempt": job["attempt"], "metrics": {"accuracy": 0.5}, "wall_time_s": 1.0}
    done_status, _ = client.post(f"{lease}/complete", result)
    end = time.perf_counter()
    with lock:
        phase.claims.append((job["trial_id"], job["attempt"]))
        if beat_status != 200:
            phase.errors[f"heartbeat {beat_status}"] += 1
        if done_status != 200:
            phase.errors[f"complete {done_status}"] += 1
            return
        phase.latencies["claim"].append(t_claim - start)
        phase.latencies["heartbeat"].append(t_beat - t_claim)
        phase.latencies["complete"].append(end - t_beat)
        phase.latencies["cycle"].append(end - start)
        phase.cycles += 1


def run_threads(workers: int, seconds: float, body: Callable[[int, float], None]) -> float:
    """Run ``body(worker_index, deadline)`` on ``workers`` threads; returns the wall time."""
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=body, args=(i, deadline)) for i in range(workers)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - start


def drive(port: int, workers: int, seconds: float, phase: Phase) -> None:
    status, _ = Http(port).post("/api/v1/searches", SPEC)
    assert status == 201, status
    lock = threading.Lock()

    def loop(target: Phase) -> Callable[[int, float], None]:
        def body(index: int, deadline: float) -> None:
            client = Http(port)
            while time.monotonic() < deadline:
                try:
                    lease_cycle(client, f"w{index}", target, lock)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        target.errors[type(e).__name__] += 1

        return body

    run_threads(workers, 1.0, loop(Phase("warm-up")))
    phase.seconds = run_threads(workers, seconds, loop(phase))


def db_double_claims(url: str) -> int:
    """Leases that share a trial attempt, and succeeded trials completed by two leases."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            same_attempt = connection.scalar(
                text(
                    "SELECT count(*) FROM (SELECT trial_id, attempt FROM leases "
                    "GROUP BY 1, 2 HAVING count(*) > 1) d"
                )
            )
            twice = connection.scalar(
                text(
                    "SELECT count(*) FROM (SELECT trial_id FROM leases WHERE state = 'completed' "
                    "GROUP BY 1 HAVING count(*) > 1) d"
                )
            )
        return int(same_attempt or 0) + int(twice or 0)
    finally:
        engine.dispose()


def ranktune_phase(name: str, url: str, workers: int, seconds: float) -> Phase:
    migrate(url)
    phase = Phase(name)
    server = Server(url)
    try:
        drive(server.port, workers, seconds, phase)
    finally:
        server.stop()
    phase.db_double_claims = db_double_claims(url)
    return phase


def optuna_phase(url: str, workers: int, seconds: float) -> Phase:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(
        url, engine_kwargs={"pool_size": workers + 4, "max_overflow": 8, "pool_pre_ping": False}
    )
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    phase = Phase("optuna RDBStorage, PostgreSQL")
    lock = threading.Lock()

    def loop(record: bool, deadline: float) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            trial = study.ask()
            trial.suggest_float("x", 0.0, 1.0)
            t_ask = time.perf_counter()
            study.tell(trial, 0.5)
            end = time.perf_counter()
            if record:
                with lock:
                    phase.claims.append((trial.number, 1))
                    phase.latencies["claim"].append(t_ask - start)
                    phase.latencies["complete"].append(end - t_ask)
                    phase.latencies["cycle"].append(end - start)
                    phase.cycles += 1

    run_threads(workers, 1.0, lambda _, deadline: loop(False, deadline))
    phase.seconds = run_threads(workers, seconds, lambda _, deadline: loop(True, deadline))
    storage.engine.dispose()
    return phase


class PostgresDatabase:
    def __init__(self, suffix: str) -> None:
        self.admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.name = f"ranktune_bench_{secrets.token_hex(4)}_{suffix}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_url(POSTGRES_ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def table(phases: list[Phase], reference: Phase) -> str:
    lines = [
        "| system | cycles | cycles/s | vs optuna | claim p50/p99 ms | heartbeat p50/p99 ms | "
        "complete p50/p99 ms | cycle p50/p99 ms | double claims | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        cells = []
        for key in ("claim", "heartbeat", "complete", "cycle"):
            values = phase.latencies[key]
            cells.append(f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))}" if values else "-")
        ratio = phase.rate / reference.rate if reference.rate else float("nan")
        errors = ", ".join(f"{k}: {v}" for k, v in phase.errors.items()) or "0"
        lines.append(
            f"| {phase.name} | {phase.cycles} | {phase.rate:.0f} | {ratio:.2f}x | {' | '.join(cells)} | "
            f"{phase.double_claims} | {errors} |"
        )
    return "\n".join(lines)


def postgres_phase(workers: int, seconds: float) -> Phase:
    database = PostgresDatabase("ranktune")
    try:
        return ranktune_phase("ranktune, PostgreSQL", database.url, workers, seconds)
    finally:
        database.drop()


def sqlite_phase(workers: int, seconds: float) -> Phase:
    path = ROOT / ".bench-leases.db"
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    for file in files:
        file.unlink(missing_ok=True)
    try:
        return ranktune_phase("ranktune, SQLite", f"sqlite:///{path}", workers, seconds)
    finally:
        for file in files:
            file.unlink(missing_ok=True)


def optuna_reference(workers: int, seconds: float) -> Phase:
    database = PostgresDatabase("optuna")
    try:
        return optuna_phase(database.url, workers, seconds)
    finally:
        database.drop()


def record(result: str, workers: int, seconds: float) -> None:
    section = (
        "## Leases\n\n"
        f"Command: `.venv/bin/python bench/bench_leases.py --write` ({dt.date.today().isoformat()}, "
        f"{workers} concurrent workers, {seconds:.0f} s measured per phase after 1 s of warm-up; "
        "PostgreSQL 15 and SQLite (WAL) on loopback; server, load generator and database share the "
        "2 cores)\n\n"
        f"{result}\n"
    )
    results = ROOT / "bench" / "RESULTS.md"
    text = results.read_text()
    section = ("" if text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n") + section
    with results.open("a") as f:
        f.write(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase (<= 20)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--write", action="store_true", help="append the results to bench/RESULTS.md")
    parser.add_argument("--phases", default="postgresql,sqlite,optuna", help="a subset, comma-separated")
    args = parser.parse_args()
    seconds = min(args.seconds, 20.0)
    runners = {"postgresql": postgres_phase, "sqlite": sqlite_phase, "optuna": optuna_reference}
    phases = [runners[name](args.workers, seconds) for name in args.phases.split(",")]
    reference = next((p for p in phases if p.name.startswith("optuna")), phases[-1])
    result = table(phases, reference)
    print(result)
    if args.write:
        record(result, args.workers, seconds)


if __name__ == "__main__":
    main()
