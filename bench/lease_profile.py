"""Sampling profiles of the lease server under load (``bench_leases.py --profile DIR``).

py-spy (not a project dependency: ``pip install py-spy`` anywhere and put it on ``PATH`` or pass its
path) samples the server process and its children while the measured phase runs and writes the
stacks in the collapsed format (``frame;frame;frame count`` per line). ``summary`` reads such a file
back into the shares that matter for the service: the share of samples whose stack passes through a
module of the service (inclusive) and the functions that are on top of the stack most often (self).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Inclusive buckets, checked in this order: a sample counts for the first bucket its stack reaches.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("claim", "leases.py:claim"),
    ("heartbeat", "leases.py:heartbeat"),
    ("complete", "leases.py:complete"),
    ("lease sweep", "lease_sweep.py"),
    ("queue filler", "queue_filler.py"),
    ("optuna mirror", "optuna_mirror.py"),
    ("auth", "auth.py"),
    ("pydantic", "pydantic"),
    ("fastapi / starlette", "starlette"),
    ("uvicorn / asyncio", "uvicorn"),
)


def find_py_spy(path: str | None = None) -> str:
    found = path or shutil.which("py-spy")
    if not found:
        raise SystemExit("--profile needs py-spy: pip install py-spy (anywhere) and put it on PATH")
    return found


@contextmanager
def recording(py_spy: str, pid: int, seconds: float, out: Path) -> Iterator[None]:
    """Sample ``pid`` (and its children) for ``seconds`` at 200 Hz into ``out`` (collapsed stacks)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # --gil: only the thread holding the GIL is sampled, i.e. what runs Python (a thread waiting for
    # PostgreSQL in psycopg counts as busy to py-spy's own idle detection here).
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
               "--rate", "200", "--format", "raw", "--gil", "--subprocesses", "--nonblocking",
               "-o", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        _, err = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.strip()[-500:]}")


def read_stacks(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def _frame_key(frame: str) -> str:
    """``function (path/to/file.py:line)`` -> ``file.py:function``."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{file}:{name.strip()}"


def summary(path: Path, top: int = 15) -> str:
    """Inclusive shares by bucket and the top self frames of one collapsed-stack file, as markdown."""
    active = read_stacks(path)  # --gil: only the thread holding the GIL, i.e. running Python
    total = sum(active.values())
    if not total:
        return "no samples"
    buckets: Counter[str] = Counter()
    for stack, count in active.items():
        keys = [_frame_key(f) for f in stack]
        bucket = next((name for name, needle in BUCKETS if any(needle in k or needle in f
                                                               for k, f in zip(keys, stack, strict=True))),
                      "other")  # fmt: skip
        buckets[bucket] += count
    selfs: Counter[str] = Counter()
    for stack, count in active.items():
        selfs[_frame_key(stack[-1])] += count
    lines = [
        f"{total} samples of the thread holding the GIL",
        "",
        "| where (inclusive) | share |",
        "|---|---|",
    ]
    lines += [f"| {name} | {100 * n / total:.0f}% |" for name, n in buckets.most_common()]
    lines += ["", "| on top of the stack (self) | share |", "|---|---|"]
    lines += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in selfs.most_common(top)]
    return "\n".join(lines)
