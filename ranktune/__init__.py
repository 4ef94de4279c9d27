"""ranktune: automated LoRA rank-schedule search.

The one top-level import package. Its subpackages are the repository's top-level folders:
``ranktune.search`` (pure schedule logic), ``ranktune.trainer`` (torch: adapters, proxy fine-tunes,
the worker), ``ranktune.service`` (FastAPI server, database, CLI) and ``ranktune.migrations``
(Alembic). Importing ``ranktune`` itself loads nothing heavy.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ranktune")
except PackageNotFoundError:  # a plain checkout on sys.path, not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
