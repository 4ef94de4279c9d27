"""What bench_leases.py drives its load against: server variants (whose code, how many API processes),
fresh databases, ``ranktune serve`` in a subprocess, and CPU time per process tree from /proc."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get(
    "RANKTUNE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Variant:
    """One way to run the server: whose code, how many API processes, what else on its path."""

    label: str
    source: Path = ROOT
    workers: int = 1
    path: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # RANKTUNE_* variables for the server

    def env(self) -> dict[str, str]:
        paths = [str(self.source), *filter(None, [self.path])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "RANKTUNE_LOG_LEVEL": "warning"}
        env["RANKTUNE_API_WORKERS"] = str(self.workers)
        if self.workers > 1:  # about 30 connections in all, as with one process
            env["RANKTUNE_DB_MAX_OVERFLOW"] = str(max(0, 30 // self.workers - 10))
        return {**env, **self.settings}


def parse_variant(text_: str, sources: dict[str, Path], scratch: Path) -> Variant:
    """``rev=GIT_REV`` or ``src=DIR`` (whose server code; default this tree), ``workers=N``,
    ``path=DIR`` (more packages for the server), ``RANKTUNE_X=VALUE`` (a server setting),
    ``label=TEXT`` (last); every key optional."""
    head, _, label = text_.partition("label=")  # the label comes last and may hold commas
    options = dict(item.split("=", 1) for item in head.split(",") if item)
    if label:
        options["label"] = label
    settings = {k: options.pop(k) for k in list(options) if k.startswith("RANKTUNE_")}
    unknown = set(options) - {"rev", "src", "workers", "path", "label"}
    if unknown:
        raise SystemExit(f"--variant: unknown key(s) {', '.join(sorted(unknown))}")
    source = Path(options["src"]).resolve() if "src" in options else ROOT
    if "rev" in options:
        rev = options["rev"]
        if rev not in sources:
            sources[rev] = scratch / rev.replace("/", "_")
            archive = subprocess.run(
                ["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True
            ).stdout
            tar_path = scratch / "source.tar"
            tar_path.write_bytes(archive)
            with tarfile.open(tar_path) as tar:
                tar.extractall(sources[rev], filter="data")
        source = sources[rev]
    workers = int(options.get("workers", os.environ.get("RANKTUNE_API_WORKERS", "1")))
    default_label = options.get("rev", options.get("src", "working tree")) + (
        f", {workers} API processes" if workers > 1 else ""
    )
    return Variant(options.get("label", default_label), source, workers, options.get("path", ""), settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- CPU accounting from /proc -------------------------------------------------------------------


def _stat(pid: str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every process below it (uvicorn's worker processes)."""
    stats = {int(pid): s for pid in os.listdir("/proc") if pid.isdigit() and (s := _stat(pid))}
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in stats.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return {pid: stats[pid][1] for pid in tree if pid in stats}


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds of the PostgreSQL backends connected to ``database`` (by process title)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title and (stat := _stat(pid)):
            found[int(pid)] = stat[1]
    return found


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


# --- databases and the server --------------------------------------------------------------------


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


@contextmanager
def database(backend: str) -> Iterator[tuple[str, str | None]]:
    """A fresh, empty database: (URL, PostgreSQL database name or None)."""
    if backend == "postgresql":
        postgres = PostgresDatabase("ranktune")
        try:
            yield postgres.url, postgres.name
        finally:
            postgres.drop()
        return
    path = ROOT / f".bench-leases-{secrets.token_hex(4)}.db"
    files = [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm")]
    try:
        yield f"sqlite:///{path}", None
    finally:
        for file in files:
            file.unlink(missing_ok=True)


def ranktune(variant: Variant, url: str, *args: str) -> str:
    """A ``ranktune`` command run with the variant's code; returns its standard output."""
    env = {**variant.env(), "RANKTUNE_DATABASE_URL": url}
    done = subprocess.run(
        [str(BIN / "ranktune"), *args], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ranktune {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


class Server:
    """``ranktune serve`` in its own process (its own GIL, like a real deployment)."""

    def __init__(self, variant: Variant, url: str) -> None:
        self.port = free_port()
        env = {**variant.env(), "RANKTUNE_DATABASE_URL": url, "RANKTUNE_PORT": str(self.port)}
        self.process = subprocess.Popen([str(BIN / "ranktune"), "serve"], env=env, cwd=ROOT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
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
