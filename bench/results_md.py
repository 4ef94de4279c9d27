"""Shared by the benches that write bench/RESULTS.md: markdown tables, prose wrapping, and replacing
one ``## section`` while leaving the others (each belongs to its own bench) as they are."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def wrap(text: str, width: int = 105) -> str:
    """Prose lines wrapped as the rest of RESULTS.md is; tables and headings stay on one line."""
    lines = [line if line.startswith(("|", "#")) else textwrap.fill(
        line, width, break_on_hyphens=False, subsequent_indent="  " if line.startswith("- ") else "")
        for line in text.split("\n")]  # fmt: skip
    return "\n".join(lines)


def machine() -> str:
    """One line about the machine a figure was measured on."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores, {memory:.0f} GiB, {platform.system()} {platform.machine()}, " \
        f"Python {platform.python_version()}"  # fmt: skip


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace ``## heading`` (up to the next ``## ``) in RESULTS.md or append it; the rest stays as the
    file is now (other sections belong to other benches)."""
    text = path.read_text()
    block = f"## {heading}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How a bench was invoked, as a copy-pastable command from the repository root."""
    return shlex.join([".venv/bin/python", f"bench/{script}", *(sys.argv[1:] if argv is None else argv)])


def publish(heading: str, text: str, write: bool) -> None:
    """Print a section and, with ``write``, put it into RESULTS.md under ``heading``."""
    print(text)
    if write:
        write_section(heading, text)
