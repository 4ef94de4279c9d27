"""Lease throughput: claim + heartbeat + complete cycles per second with 64 concurrent workers.

Phases, each bounded in time, all on loopback:
1. ranktune on PostgreSQL: ``ranktune serve`` in a subprocess, 64 worker threads each looping
   claim -> heartbeat -> complete over HTTP with a worker token (tokens are checked as in production);
2. the same against ranktune on SQLite (the embedded default's engine, WAL);
3. Optuna's RDBStorage on the same PostgreSQL: 64 threads looping ``study.ask()`` -> ``study.tell()``
   (what Optuna's own distributed optimisation does per trial; no HTTP in between).

Server variants run side by side in one invocation (``--variant``, repeatable): the working tree,
the server code of an earlier git revision (``rev=``, extracted with ``git archive``), several API
processes (``workers=``), extra packages on the server's path (``path=``). With ``--rounds`` the
phases alternate round after round, so a burst of load from elsewhere on the machine hits every
variant alike; each row adds up its rounds.

Workers are threads with one keep-alive stdlib HTTP connection each: cheaper than an httpx pool
(an asyncio httpx client used most of a core by itself), so that the load generator starves the
server of the cores they share as little as possible. Besides cycles/s and p50/p99 latency per
request and per cycle, each row gives the CPU time spent per cycle by the server processes, by the
PostgreSQL backends of the phase's database, and by the load generator (from /proc): on a shared
machine these are steadier than the rates. Double claims (a trial attempt handed to two workers)
must be zero: checked in the answers and in the database afterwards.

Run: .venv/bin/python bench/bench_leases.py [--seconds 15] [--workers 64] [--rounds 1]
     [--variant rev=REV,label=before] [--variant workers=2] [--phases postgresql,sqlite,optuna] [--write]
``--write`` puts this run's command, date and table at the top of the "## Leases" section of
bench/RESULTS.md, replacing what stood above its end marker (the notes below it stay).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import http.client
import json
import os
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lease_profile import find_py_spy, recording, summary
from lease_rig import (  # bench/ is on the path when this file runs as a script
    ROOT,
    PostgresDatabase,
    Server,
    Variant,
    backend_cpu,
    cpu_delta,
    database,
    db_double_claims,
    parse_variant,
    ranktune,
    tree_cpu,
)

WORKER = {"device": "cpu", "hostname": "bench"}
SPEC = {
    "name": "bench",
    "model": "builtin:tiny-vlm",
    "task": "builtin:digits-vqa",
    "strategy": "uniform",  # the bench is about leases, not about proposing
    "max_trials": 10_000,
    "parallelism": 256,
    "lease_ttl_s": 600,
}
LATENCIES = ("claim", "heartbeat", "complete", "cycle")


@dataclass
class Phase:
    name: str
    cycles: int = 0
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in LATENCIES})
    claims: list[tuple[int, int]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    db_double_claims: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # seconds: server, db, client

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    @property
    def double_claims(self) -> int:
        return sum(n - 1 for n in Counter(self.claims).values() if n > 1) + self.db_double_claims

    def add(self, other: Phase) -> None:
        self.cycles += other.cycles
        self.seconds += other.seconds
        for key, values in other.latencies.items():
            self.latencies[key].extend(values)
        self.errors.update(other.errors)
        self.db_double_claims += other.double_claims  # per round: trial ids restart in each database
        for key, seconds in other.cpu.items():
            self.cpu[key] = self.cpu.get(key, 0.0) + seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- the load --------------------------------------------------------------------------------------


class Http:
    """One keep-alive connection per worker thread."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: object) -> tuple[int, Any]:
        try:
            self.connection.request("POST", path, body=json.dumps(body), headers=self.headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            raise
        try:
            return response.status, (json.loads(data) if data else None)
        except ValueError:  # a plain-text 500: counted as an error by the caller
            return response.status, None


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
        for key, value in zip(
            LATENCIES, (t_claim - start, t_beat - t_claim, end - t_beat, end - start), strict=True
        ):
            phase.latencies[key].append(value)
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


@contextmanager
def measured_cpu(phase: Phase, server_pid: int | None, database_name: str | None) -> Iterator[None]:
    server = tree_cpu(server_pid) if server_pid else {}
    backends = backend_cpu(database_name) if database_name else {}
    client = time.process_time()
    yield
    phase.cpu["client"] = time.process_time() - client
    if server_pid:
        phase.cpu["server"] = cpu_delta(server, tree_cpu(server_pid))
    if database_name:
        phase.cpu["db"] = cpu_delta(backends, backend_cpu(database_name))


def drive(
    server: Server,
    tokens: dict[str, str],
    workers: int,
    seconds: float,
    phase: Phase,
    db: str | None,
    profile: tuple[str, Path] | None = None,
) -> None:
    """Submit a search, warm up for 1 s, then measure ``seconds`` of the 64-worker loop; with
    ``profile`` (py-spy, output file) the server is sampled meanwhile."""
    status, _ = Http(server.port, tokens["user"]).post("/api/v1/searches", SPEC)
    assert status == 201, status
    lock = threading.Lock()

    def loop(target: Phase) -> Callable[[int, float], None]:
        def body(index: int, deadline: float) -> None:
            client = Http(server.port, tokens["worker"])
            while time.monotonic() < deadline:
                try:
                    lease_cycle(client, f"w{index}", target, lock)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        target.errors[type(e).__name__] += 1

        return body

    run_threads(workers, 1.0, loop(Phase("warm-up")))
    sampled = recording(profile[0], server.process.pid, seconds, profile[1]) if profile else nullcontext()
    with measured_cpu(phase, server.process.pid, db), sampled:
        phase.seconds = run_threads(workers, seconds, loop(phase))


def ranktune_phase(
    backend: str, variant: Variant, workers: int, seconds: float, profile: tuple[str, Path] | None = None
) -> Phase:
    phase = Phase(f"ranktune {variant.label}, {'PostgreSQL' if backend == 'postgresql' else 'SQLite'}")
    with database(backend) as (url, db_name):
        ranktune(variant, url, "db", "upgrade")
        tokens = {
            role: ranktune(variant, url, "token", "create", "--role", role, "--name", f"bench-{role}")
            for role in ("user", "worker")
        }
        server = Server(variant, url)
        try:
            drive(server, tokens, workers, seconds, phase, db_name, profile)
        finally:
            server.stop()
        phase.db_double_claims = db_double_claims(url)
    return phase


def optuna_phase(workers: int, seconds: float) -> Phase:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    postgres = PostgresDatabase("optuna")
    phase = Phase("optuna RDBStorage, PostgreSQL")
    try:
        storage = optuna.storages.RDBStorage(
            postgres.url,
            engine_kwargs={"pool_size": workers + 4, "max_overflow": 8, "pool_pre_ping": False},
        )
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
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
        with measured_cpu(phase, None, postgres.name):
            phase.seconds = run_threads(workers, seconds, lambda _, deadline: loop(True, deadline))
        storage.engine.dispose()
    finally:
        postgres.drop()
    return phase


# --- report --------------------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


def table(phases: list[Phase], reference: Phase | None) -> str:
    lines = [
        "| system | cycles | cycles/s | vs optuna | claim p50/p99 ms | heartbeat p50/p99 ms | "
        "complete p50/p99 ms | cycle p50/p99 ms | CPU ms/cycle server / db / load | double claims "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in phases:
        cells = []
        for key in LATENCIES:
            values = phase.latencies[key]
            cells.append(f"{ms(percentile(values, 0.5))} / {ms(percentile(values, 0.99))}" if values else "-")
        ratio = phase.rate / reference.rate if reference and reference.rate else float("nan")
        cpu = " / ".join(
            ms(phase.cpu[k] / phase.cycles) if phase.cycles and k in phase.cpu else "-"
            for k in ("server", "db", "client")
        )
        errors = ", ".join(f"{k}: {v}" for k, v in phase.errors.items()) or "0"
        lines.append(
            f"| {phase.name} | {phase.cycles} | {phase.rate:.0f} | {ratio:.2f}x | {' | '.join(cells)} | "
            f"{cpu} | {phase.double_claims} | {errors} |"
        )
    return "\n".join(lines)


RECORD_END = "<!-- end of the run recorded by bench_leases.py --write -->"


def record(result: str, args: argparse.Namespace) -> None:
    """Replace the command and table at the top of the "## Leases" section of RESULTS.md (up to
    ``RECORD_END``; the notes below it are kept)."""
    command = ".venv/bin/python bench/bench_leases.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    block = (
        f"Command: `{command}` ({dt.date.today().isoformat()}; {args.workers} concurrent workers, "
        f"{args.rounds} round(s) of {args.seconds:.0f} s measured per phase after 1 s of warm-up; "
        "PostgreSQL 15 and SQLite (WAL) on loopback; server, load generator and database share "
        f"{os.cpu_count()} cores with other jobs)\n\n{result}\n"
    )
    results = ROOT / "bench" / "RESULTS.md"
    content = results.read_text()
    start = content.index("## Leases\n")
    section_end = content.find("\n## ", start + 1)
    section_end = len(content) if section_end < 0 else section_end + 1
    marker = content.find(RECORD_END, start, section_end)
    end = section_end if marker < 0 else marker
    rest = content[end:] if marker >= 0 else "\n" + content[end:]
    results.write_text(content[:start] + "## Leases\n\n" + block + "\n" + rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per phase (<= 20)")
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="alternate every phase this many times")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="a server variant: rev=GIT_REV|src=DIR,workers=N,path=DIR,label=TEXT (repeatable; "
        "default: this tree)",
    )
    parser.add_argument("--phases", default="postgresql,sqlite,optuna", help="a subset, comma-separated")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the server with py-spy into DIR (one file per phase) and summarise",
    )
    parser.add_argument("--py-spy", help="the py-spy executable (default: on PATH)")
    args = parser.parse_args()
    py_spy = find_py_spy(args.py_spy) if args.profile else None
    args.seconds = min(args.seconds, 20.0)
    backends = [name for name in args.phases.split(",") if name in ("postgresql", "sqlite")]
    with tempfile.TemporaryDirectory(prefix="bench-leases-") as scratch:
        sources: dict[str, Path] = {}
        variants = [parse_variant(v, sources, Path(scratch)) for v in args.variant or [""]]
        totals: dict[str, Phase] = {}
        profiles: list[tuple[str, Path]] = []
        for round_ in range(args.rounds):
            runs: list[Callable[[], Phase]] = []
            for backend in backends:
                for number, variant in enumerate(variants):
                    profile = None
                    if py_spy is not None:
                        out = args.profile / f"{backend}-variant{number}-round{round_}.txt"
                        profile = (py_spy, out)
                        profiles.append((f"{variant.label}, {backend}, round {round_ + 1}", out))
                    runs.append(
                        functools.partial(
                            ranktune_phase, backend, variant, args.workers, args.seconds, profile
                        )
                    )
            if "optuna" in args.phases.split(","):
                runs.append(functools.partial(optuna_phase, args.workers, args.seconds))
            for run in runs:
                phase = run()
                totals.setdefault(phase.name, Phase(phase.name)).add(phase)
                print(table([phase], None).splitlines()[-1], file=sys.stderr, flush=True)
    phases = list(totals.values())
    reference = next((p for p in phases if p.name.startswith("optuna")), None)
    result = table(phases, reference)
    print(result)
    for label, out in profiles:
        print(f"\nProfile of the server ({label}; {out}):\n\n{summary(out)}")
    if args.write:
        record(result, args)


if __name__ == "__main__":
    main()
