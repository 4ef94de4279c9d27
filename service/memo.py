"""Per-process memos for the hot paths of the lease protocol.

- ``JsonMemo``: values built from stored JSON (a search's spec and sites), reused while the JSON
  compares equal. An entry is found by a cheap key and returned only when its document equals the
  caller's, so it can never be stale: a search's spec is immutable after submission, and even where
  keys collide (search ids restart in every test database) a different document is rebuilt.
- ``TtlMemo``: values that may be served for a short, bounded time (the principal of a token), with
  ``invalidate`` for changes this process makes itself.

Both are thread-safe (routes run on a thread pool) and bounded (least recently used entries go).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class JsonMemo(Generic[T]):
    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[object, T]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, document: object, build: Callable[[], T]) -> T:
        """The value for ``document``, built by ``build()`` unless an equal document was seen."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == document:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
            self.misses += 1
        value = build()  # outside the lock: building may take milliseconds; a race builds twice
        # A copy: the caller's dict may be changed in place later, the memo's key must not.
        stored = copy.deepcopy(document)
        with self._lock:
            self._entries[key] = (stored, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class TtlMemo(Generic[T]):
    """Entries live ``ttl_s`` seconds (monotonic clock); ``invalidate`` drops every entry at once,
    including those being computed while it runs (a generation counter)."""

    def __init__(self, ttl_s: float, size: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = 0

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def generation(self) -> int:
        return self._generation

    def get(self, key: Hashable) -> T | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= time.monotonic():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Hashable, value: T, generation: int) -> None:
        """Store ``value`` unless ``invalidate`` ran since ``generation()`` was read (the value may
        have been read from the database before a change this process committed)."""
        if not self.enabled:
            return
        with self._lock:
            if generation != self._generation:
                return
            self._entries[key] = (time.monotonic() + self.ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
