"""`make demo` as a new user runs it: a fresh clone, an empty model cache, no standard input.

Clones the repository's committed HEAD into a temporary directory, runs `make demo DEMO_ARGS=--exit`
there with its own empty ``RANKTUNE_CACHE_DIR`` (so the tiny VLM is pretrained, as on a first run)
and, unless ``--pip-cache`` is given, without pip's cache (``PIP_NO_CACHE_DIR=1``: every wheel is
fetched from the package index again). Each output line is time-stamped, which splits the wall time
into phases: installing (until `ranktune demo` starts), preparing the built-in model (until the
embedded server is up), the search with its confirmation (until the summary), and the rest.

Goal (issue: one-command demo): under 10 minutes on 2 CPU cores, first run included.

Run: .venv/bin/python bench/bench_demo.py [--write] [--pip-cache] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 600.0
# Markers in the output that end each phase, in order (the demo's own lines, see service/demo.py).
PHASES = (
    ("install (venv, torch, the project and its dependencies)", re.compile(r"ranktune demo")),
    ("built-in model (pretrained once, then cached), data, server start", re.compile(r"^ranktune server on")),
    ("search: proxy trials and confirmation", re.compile(r"^best schedule \(trial")),
    ("summary, PEFT export, shutdown", None),
)
CONFIRMED = re.compile(
    r"winner (?P<winner>[\d.]+) ± (?P<winner_std>[\d.]+), uniform rank-8 LoRA (?P<uniform>[\d.]+) ± "
    r"(?P<uniform_std>[\d.]+), gain (?P<gain>[-+][\d.]+)"
)


@dataclass
class DemoRun:
    wall_s: float
    returncode: int
    lines: list[tuple[float, str]] = field(default_factory=list)

    def phases(self) -> list[tuple[str, float]]:
        """Seconds per phase; a phase whose marker never appeared takes the rest of the run."""
        spans, start, cursor = [], 0.0, 0
        for name, marker in PHASES:
            end = self.wall_s
            if marker is not None:
                for index in range(cursor, len(self.lines)):
                    if marker.search(self.lines[index][1]):
                        end, cursor = self.lines[index][0], index + 1
                        break
            spans.append((name, max(0.0, end - start)))
            start = end
            if end >= self.wall_s:
                break
        return spans

    def confirmed(self) -> dict[str, float] | None:
        for _, line in self.lines:
            found = CONFIRMED.search(line)
            if found:
                return {key: float(value) for key, value in found.groupdict().items()}
        return None


def run_demo(workdir: Path, pip_cache: bool) -> DemoRun:
    clone = workdir / "ranktune"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "RANKTUNE_CACHE_DIR": str(workdir / "cache"), "TERM": "dumb", "COLUMNS": "200"}
    env.pop("VIRTUAL_ENV", None)
    if not pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    start = time.monotonic()
    process = subprocess.Popen(
        ["make", "demo", "DEMO_ARGS=--exit"],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = DemoRun(wall_s=0.0, returncode=0)
    assert process.stdout is not None
    for line in process.stdout:
        stamp = time.monotonic() - start
        run.lines.append((stamp, line.rstrip("\n")))
        print(f"[{stamp:6.1f}s] {line}", end="", flush=True)
    run.returncode = process.wait()
    run.wall_s = time.monotonic() - start
    return run


def render(run: DemoRun, command: str, pip_cache: bool) -> str:
    from bench.results_md import machine, table

    rows = [[name, f"{seconds:.0f} s"] for name, seconds in run.phases()]
    rows.append(["**total**", f"**{run.wall_s:.0f} s** ({run.wall_s / 60:.1f} min)"])
    verdict = "met" if run.returncode == 0 and run.wall_s < GOAL_S else "not met"
    lines = [
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}; a fresh clone of HEAD, "
        f"an empty model cache, pip's cache {'kept' if pip_cache else 'off'}, no standard input)",
        "",
        table(["phase", "wall"], rows),
        "",
        f"`make demo` exited {run.returncode}. Goal: under 10 minutes, first run included: **{verdict}**.",
    ]
    confirmed = run.confirmed()
    if confirmed:
        outcome = (
            "uniform rank-8 LoRA itself won the confirmation"
            if confirmed["gain"] == 0
            else f"the winner gained {confirmed['gain']:+.3f} over uniform rank-8 LoRA"
        )
        lines += [
            "",
            f"The demo's own result on this run: {outcome} (winner {confirmed['winner']:.3f} ± "
            f"{confirmed['winner_std']:.3f} test accuracy, uniform {confirmed['uniform']:.3f} ± "
            f"{confirmed['uniform_std']:.3f}; 2 seeds of 240 steps, so gains of a few points are within "
            "seed noise: see Search quality).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    parser.add_argument("--pip-cache", action="store_true", help="let pip use its cache (a warm machine)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its .venv")
    args = parser.parse_args()
    command = "python bench/bench_demo.py" + "".join(
        f" {flag}" for flag, on in (("--write", args.write), ("--pip-cache", args.pip_cache)) if on
    )
    workdir = Path(tempfile.mkdtemp(prefix="ranktune-demo-bench-"))
    try:
        run = run_demo(workdir, args.pip_cache)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    from bench.results_md import wrap, write_section

    body = wrap(render(run, command, args.pip_cache))
    print("\n" + body)
    if args.write:
        write_section("Demo", body)
    sys.exit(0 if run.returncode == 0 else 1)


if __name__ == "__main__":
    main()
