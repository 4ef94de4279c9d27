"""``builtin:minilm-stdlib``: which part of Python's standard library does a docstring come from?

**Real text, no download.** The examples are the summary paragraphs of the public functions,
classes and methods of ~80 standard-library modules of the running interpreter, labelled by the
module's area: files, network, text, numbers, concurrency, data. They are short technical English
written by people ("Return a copy of Decimal x.", "Schedule the timeout at absolute time."), often
ambiguous between areas, so the task has headroom: ``builtin:minilm-topics`` is saturated by
uniform rank-8 LoRA (100%), this one is not.

Splits are drawn per owner (a module's functions, or one class with its methods), so the methods of
one class never straddle two splits, and per area in the shares 70/15/15. The text comes from the
interpreter: figures are comparable between runs on the same Python minor version (they were
measured on 3.11).

The model is the pretrained MiniLM encoder (``builtin:minilm``) with a new mean-pooling linear head,
as for topics.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from typing import Any, ClassVar

from ranktune.trainer.tasks.base import Split
from ranktune.trainer.tasks.classification import BuiltinTextTask

AREAS: dict[str, tuple[str, ...]] = {
    "files": ("os", "os.path", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "filecmp", "io", "stat",
              "zipfile", "tarfile", "gzip", "bz2", "lzma"),
    "network": ("socket", "ssl", "http.client", "http.server", "http.cookiejar", "urllib.request",
                "urllib.parse", "email.message", "email.utils", "smtplib", "ftplib", "imaplib", "poplib",
                "xmlrpc.client", "ipaddress", "selectors", "socketserver"),
    "text": ("re", "string", "textwrap", "difflib", "unicodedata", "codecs", "html", "html.parser", "csv",
             "json", "xml.etree.ElementTree", "xml.dom.minidom", "gettext", "locale", "shlex"),
    "numbers": ("math", "cmath", "statistics", "decimal", "fractions", "random", "numbers", "operator"),
    "concurrency": ("threading", "multiprocessing", "multiprocessing.pool", "concurrent.futures", "asyncio",
                    "queue", "subprocess", "signal", "sched", "contextvars"),
    "data": ("collections", "itertools", "functools", "heapq", "bisect", "array", "copy", "dataclasses",
             "enum", "types", "weakref", "pickle", "shelve", "sqlite3", "datetime", "calendar", "zoneinfo"),
}  # fmt: skip
LABELS: tuple[str, ...] = tuple(AREAS)
SPLIT_SHARES: tuple[tuple[Split, float], ...] = (("train", 0.7), ("val", 0.15), ("test", 0.15))
MIN_WORDS = 5


def summary(obj: Any) -> str | None:
    """The first paragraph of ``obj``'s docstring on one line, if it has at least ``MIN_WORDS`` words."""
    try:
        doc = inspect.getdoc(obj)
    except Exception:  # a descriptor that raises on access
        return None
    if not doc:
        return None
    text = re.sub(r"\s+", " ", doc.strip().split("\n\n")[0])
    return text if len(text.split()) >= MIN_WORDS else None


def _documented(obj: Any) -> bool:
    return inspect.isclass(obj) or inspect.isroutine(obj)


def module_docstrings(name: str) -> list[tuple[str, str]]:
    """(owner, summary) of the public functions, classes and their methods defined in module ``name``
    (or its package); owner is the module for functions, the class for a class and its methods."""
    module = importlib.import_module(name)
    package = name.split(".")[0]
    found = []
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or not _documented(obj):
            continue
        if str(getattr(obj, "__module__", package) or package).split(".")[0] not in (package, "_" + package):
            continue  # imported from elsewhere
        owner = f"{name}.{attr}" if inspect.isclass(obj) else name
        text = summary(obj)
        if text:
            found.append((owner, text))
        if inspect.isclass(obj):
            for member_name, member in sorted(vars(obj).items()):
                public = not member_name.startswith("_") and (
                    inspect.isroutine(member) or isinstance(member, property)
                )
                text = summary(member) if public else None  # not constants: their docstring is their type's
                if text:
                    found.append((owner, text))
    return found


def _hash(owner: str) -> int:
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big")


def make_docstring_splits() -> dict[Split, tuple[list[str], list[int]]]:
    """Every distinct summary once (the first area that has it). Within each area, owners in the order
    of a stable hash of their names go, whole, to the split furthest below its share of the area."""
    seen: set[str] = set()
    splits: dict[Split, tuple[list[str], list[int]]] = {split: ([], []) for split, _ in SPLIT_SHARES}
    for label, area in enumerate(LABELS):
        owned: dict[str, list[str]] = {}
        for name in AREAS[area]:
            for owner, text in module_docstrings(name):
                if text not in seen:
                    seen.add(text)
                    owned.setdefault(owner, []).append(text)
        total = sum(len(texts) for texts in owned.values())
        placed = dict.fromkeys((split for split, _ in SPLIT_SHARES), 0)
        for owner in sorted(owned, key=_hash):
            split = max(SPLIT_SHARES, key=lambda s: s[1] * total - placed[s[0]])[0]
            placed[split] += len(owned[owner])
            texts, labels = splits[split]
            texts += owned[owner]
            labels += [label] * len(owned[owner])
    return splits


class MiniLMStdlibTask(BuiltinTextTask):
    """Six-way area classification of real standard-library docstrings with MiniLM and a new head."""

    name: ClassVar[str] = "builtin:minilm-stdlib"
    description: ClassVar[str] = (
        "Which area of Python's standard library (files, network, text, numbers, concurrency, data) a "
        "docstring comes from: REAL text, the summary paragraphs of the public functions, classes and "
        "methods of ~80 modules of the running interpreter, split per class or module; the pretrained "
        "all-MiniLM-L6-v2 encoder (builtin:minilm) plus a new mean-pooling linear head; metric: accuracy."
    )

    labels = LABELS

    def make_examples(self) -> dict[Split, tuple[list[str], list[int]]]:
        return make_docstring_splits()
