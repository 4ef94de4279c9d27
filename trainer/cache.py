"""Where ranktune keeps what it builds once and reuses: the pretrained built-in model, for one."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RANKTUNE_CACHE_DIR"


def cache_dir() -> Path:
    """``$RANKTUNE_CACHE_DIR`` if set, else the user's cache directory for ranktune; created on demand."""
    import platformdirs

    configured = os.environ.get(CACHE_ENV, "").strip()
    path = Path(configured).expanduser() if configured else Path(platformdirs.user_cache_dir("ranktune"))
    path.mkdir(parents=True, exist_ok=True)
    return path
