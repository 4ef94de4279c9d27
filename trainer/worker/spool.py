"""Finished results wait on disk until the server has acknowledged them: none is ever lost.

A report is written atomically (temp file + rename) *before* it is sent, and removed only once
the server answered 2xx, or answered that it will never take it (404, 409: stale attempt).
A worker killed between finishing and reporting resends the report on its next start. A
confirmation run's adapter zip, and a rung's training state, wait the same way and go before the report.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ReportKind = Literal["complete", "fail"]


@dataclass(frozen=True)
class Report:
    lease_id: str
    kind: ReportKind
    body: dict[str, Any]
    path: Path


ADAPTER_SUFFIX = ".adapter.zip"


@dataclass(frozen=True)
class PendingAdapter:
    lease_id: str
    attempt: int
    path: Path


STATE_SUFFIX = ".state"


@dataclass(frozen=True)
class PendingState:
    lease_id: str
    attempt: int
    steps: int
    path: Path


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def put(self, lease_id: str, kind: ReportKind, body: dict[str, Any]) -> Report:
        path = self.directory / f"{lease_id}.{kind}.json"
        payload = json.dumps({"lease_id": lease_id, "kind": kind, "body": body})
        self._write_atomically(path, payload.encode())
        return Report(lease_id, kind, body, path)

    def _write_atomically(self, path: Path, data: bytes) -> None:
        """Temp file, fsync, rename: ``path`` holds all of ``data`` or does not exist."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def pending(self) -> list[Report]:
        reports = []
        for path in sorted(self.directory.glob("*.json")):
            if path.name.startswith(".tmp-"):
                continue
            try:
                data = json.loads(path.read_text())
                reports.append(Report(data["lease_id"], data["kind"], data["body"], path))
            except (OSError, ValueError, KeyError):
                path.rename(path.with_suffix(".corrupt"))
        return reports

    def done(self, report: Report) -> None:
        report.path.unlink(missing_ok=True)

    def put_adapter(self, lease_id: str, attempt: int, archive: bytes) -> PendingAdapter:
        """Keep a confirmation run's adapter zip until the server took it (or will never take it)."""
        path = self.directory / f"{lease_id}.{attempt}{ADAPTER_SUFFIX}"
        self._write_atomically(path, archive)
        return PendingAdapter(lease_id, attempt, path)

    def pending_adapters(self) -> list[PendingAdapter]:
        found = []
        for path in sorted(self.directory.glob(f"*{ADAPTER_SUFFIX}")):
            lease_id, _, attempt = path.name.removesuffix(ADAPTER_SUFFIX).rpartition(".")
            if lease_id and attempt.isdigit():
                found.append(PendingAdapter(lease_id, int(attempt), path))
        return found

    def put_state(self, lease_id: str, attempt: int, steps: int, state: bytes) -> PendingState:
        """Keep a rung's training state until the server took it (or will never take it)."""
        path = self.directory / f"{lease_id}.{attempt}.{steps}{STATE_SUFFIX}"
        self._write_atomically(path, state)
        return PendingState(lease_id, attempt, steps, path)

    def pending_states(self) -> list[PendingState]:
        found = []
        for path in sorted(self.directory.glob(f"*{STATE_SUFFIX}")):
            head, _, steps = path.name.removesuffix(STATE_SUFFIX).rpartition(".")
            lease_id, _, attempt = head.rpartition(".")
            if lease_id and attempt.isdigit() and steps.isdigit():
                found.append(PendingState(lease_id, int(attempt), int(steps), path))
        return found
