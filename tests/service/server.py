"""A real uvicorn server on a free loopback port, in a thread of the test process."""

from __future__ import annotations

from ranktune.service.embedded import EmbeddedServer as LiveServer

__all__ = ["LiveServer"]
