"""Structured logs: ``key=value`` lines, or JSON lines with ``RANKTUNE_LOG_JSON=1``.

Log calls pass domain fields through ``extra``: ``action``, ``search``, ``trial``, ``worker``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

FIELDS = ("action", "search", "trial", "worker")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: getattr(record, k) for k in FIELDS if getattr(record, k, None) is not None}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        parts = [f"ts={when}", f"level={record.levelname.lower()}", f"logger={record.name}"]
        parts += [f"{k}={v}" for k, v in _fields(record).items()]
        parts.append(f"msg={json.dumps(record.getMessage())}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            **_fields(record),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str = "info", as_json: bool = False) -> None:
    """Route ranktune's, uvicorn's and alembic's logs through one handler on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("ranktune", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
