"""The fine-tunes of bench/search_quality.py: an append-only store (resume a stopped run) and a pool of
processes that trains several at once (``--jobs``).

Every finished fine-tune is one JSON line of ``RunStore``: what was trained (task, model, ranks, seed,
steps, split, learning rate, batch size, method, torch version and thread count, device) and what it
measured. On CPU a run is bit-for-bit repeatable for the same inputs, and the proposers are
deterministic in the trials they are shown, so a second invocation with the same store replays the
finished part of the benchmark from the file and trains only what is missing. Lines are appended under
an exclusive lock and flushed before the lock is released: a killed run loses at most the fine-tune in
progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere one process writes at a time anyway (``--jobs 1``)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def run_key(**fields: Any) -> str:
    """The canonical text of what identifies a fine-tune (sorted keys, lists for tuples)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass
class RunStore:
    """Finished fine-tunes by key, read incrementally from ``path`` (``None``: in memory only)."""

    path: Path | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _offset: int = 0
    _states: dict[str, bytes] = field(default_factory=dict)  # training states, where there is no path

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Read the lines other processes appended since the last read (a torn last line waits)."""
        if self.path is None or not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # being written: read it next time
                self._offset += len(raw)
                line = raw.strip()
                if line:
                    record = json.loads(line)
                    self.records[record["key"]] = record

    def get(self, key: str) -> dict[str, Any] | None:
        if key not in self.records:
            self.refresh()
        return self.records.get(key)

    def put(self, key: str, metric: float, wall_s: float, extra: dict[str, Any] | None = None) -> None:
        record = {"key": key, "metric": metric, "wall_s": wall_s, "extra": extra or {}}
        self.records[key] = record
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with open(self.path, "ab") as handle, _locked(handle):
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def __len__(self) -> int:
        return len(self.records)

    def state_path(self, key: str) -> Path | None:
        """Where the training state at the end of ``key``'s run is kept (beside the store, one file per
        run: what a +asha promotion goes on from with ``--resume``); ``None`` for a store in memory."""
        if self.path is None:
            return None
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        return self.path.with_name(self.path.name + ".states") / f"{name}.pt"

    def put_state(self, key: str, data: bytes) -> None:
        path = self.state_path(key)
        if path is None:
            self._states[key] = data
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.part")  # whole or absent: renamed once written
        partial.write_bytes(data)
        os.replace(partial, path)

    def get_state(self, key: str) -> bytes | None:
        path = self.state_path(key)
        if path is None:
            return self._states.get(key)
        return path.read_bytes() if path.exists() else None


@contextlib.contextmanager
def _locked(handle: Any) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def in_pool(bench: Any, what: str, calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """``fn(name, config, *args, store, threads)`` for each call in ``jobs`` spawned processes, in
    order; the bar counts finished calls and the store's fine-tunes."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    if bench.store.path is None:
        raise ValueError("a pool of processes shares its fine-tunes through a store file")
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
    with ProcessPoolExecutor(bench.jobs, mp_context=context) as pool, bench.bar(what, len(calls)) as bar:
        futures = [pool.submit(fn, bench.name, bench.config, *args, bench.store.path, bench.threads)
                   for fn, args in calls]  # fmt: skip
        pending, shown = set(futures), len(bench.store)
        while pending:
            finished, pending = wait(pending, timeout=5, return_when=FIRST_COMPLETED)
            bench.store.refresh()
            if len(bench.store) != shown:  # a line per new fine-tune, also where stderr is a file
                shown = len(bench.store)
                bar.set_postfix(fine_tunes=shown, refresh=not finished)
            bar.update(len(finished))
        return [f.result() for f in futures]
