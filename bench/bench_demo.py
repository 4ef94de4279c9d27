"""`make demo` as a new user runs it: a fresh clone, an empty model cache, no standard input.

Clones the repository's committed HEAD into a temporary directory, runs `make demo DEMO_ARGS=--exit`
there with its own empty ``RANKTUNE_CACHE_DIR`` (so the tiny VLM is pretrained, as on a first run)
and, unless ``--pip-cache`` is given, without pip's cache (``PIP_NO_CACHE_DIR=1``: every wheel is
fetched from the package index again). Each output line is time-stamped, which splits the wall time
into phases: installing (until `ranktune demo` starts), preparing the built-in model (until the
embedded server is up), the search with its confirmation (until the summary), and the rest.

Goals: under 10 minutes on 2 CPU cores, first run included (issue: one-command demo); the demo's
confirmed schedule beats uniform with a paired 95% interval above 0 in at least 4 of 5 runs with
different search seeds (issue: a search that wins). ``--runs N`` runs search seeds 0..N-1: the first as
a first run (the timed one), the others in the same clone with the model cached and a database each.

Run: .venv/bin/python bench/bench_demo.py [--write] [--pip-cache] [--keep] [--runs N]
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
GOAL_WINS = (4, 5)  # the demo's schedule beats uniform (95% CI above 0) in at least 4 of 5 search seeds
# Markers in the output that end each phase, in order (the demo's own lines, see service/demo.py).
PHASES = (
    ("install (venv, torch, the project and its dependencies)", re.compile(r"ranktune demo")),
    ("built-in model (pretrained once, then cached), data, server start", re.compile(r"^ranktune server on")),
    ("search: proxy trials and confirmation", re.compile(r"^best schedule \(trial")),
    ("summary, PEFT export, shutdown", None),
)
# The confirmation line the demo prints (search.confirm.describe_result).
PAIRED = re.compile(
    r"^confirmed: (?P<label>.+?): gain (?P<gain>[-+][\d.]+) points \(95% CI (?P<low>[-+][\d.]+) to "
    r"(?P<high>[-+][\d.]+), paired over (?P<sample>[^)]+)\): (?P<verdict>.+)$"
)
ACCURACY = re.compile(
    r"winner (?P<winner>[\d.]+) ± [\d.]+, uniform rank-(?P<rank>\d+) LoRA (?P<uniform>[\d.]+)"
)


@dataclass
class Confirmed:
    """What one demo's confirmation found: the winner's paired gain over uniform (points) and its CI."""

    label: str
    gain: float | None = None
    low: float | None = None
    high: float | None = None
    sample: str = ""
    verdict: str = "uniform kept: no other schedule was confirmed"
    winner: float | None = None
    uniform: float | None = None

    @property
    def uniform_kept(self) -> bool:
        return self.label.startswith("uniform kept")

    @property
    def win(self) -> bool:
        """The demo's schedule beat uniform: not uniform itself, and the 95% interval above 0."""
        return not self.uniform_kept and self.low is not None and self.low > 0


@dataclass
class DemoRun:
    wall_s: float
    returncode: int
    lines: list[tuple[float, str]] = field(default_factory=list)
    seed: int = 0

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

    def confirmed(self) -> Confirmed | None:
        """The demo's confirmation as printed; None when it printed none (the search failed)."""
        found: Confirmed | None = None
        accuracy = None
        for _, line in self.lines:
            accuracy = ACCURACY.search(line) or accuracy
            if line.startswith("confirmed: uniform kept: no other"):
                found = Confirmed(label="uniform kept")
            elif paired := PAIRED.search(line):
                values = paired.groupdict()
                found = Confirmed(
                    label=values["label"], gain=float(values["gain"]), low=float(values["low"]),
                    high=float(values["high"]), sample=values["sample"], verdict=values["verdict"],
                )  # fmt: skip
        if found is not None and accuracy is not None:
            found.winner, found.uniform = float(accuracy["winner"]), float(accuracy["uniform"])
        return found


def run_demo(workdir: Path, pip_cache: bool, seed: int = 0) -> DemoRun:
    """`make demo` with search seed ``seed`` in a clone of HEAD under ``workdir``: the first call
    clones, installs and pretrains the model (a first run); later calls reuse both and write to their
    own output directory, so no demo warm-starts from another (each is a search of its own)."""
    clone = workdir / "ranktune"
    if not clone.exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "RANKTUNE_CACHE_DIR": str(workdir / "cache"), "TERM": "dumb", "COLUMNS": "200"}
    env.pop("VIRTUAL_ENV", None)
    if not pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    start = time.monotonic()
    process = subprocess.Popen(
        ["make", "demo", f"DEMO_ARGS=--exit --seed {seed} --out ranktune-out-{seed}"],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = DemoRun(wall_s=0.0, returncode=0, seed=seed)
    assert process.stdout is not None
    for line in process.stdout:
        stamp = time.monotonic() - start
        run.lines.append((stamp, line.rstrip("\n")))
        print(f"[{stamp:6.1f}s] {line}", end="", flush=True)
    run.returncode = process.wait()
    run.wall_s = time.monotonic() - start
    return run


def _points(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


RUN_COLUMNS = ["search seed", "wall", "winner", "accuracy winner / uniform (%)", "gain [95% CI]", "verdict",
               "beats uniform"]  # fmt: skip


def run_rows(runs: list[DemoRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        found = run.confirmed()
        if found is None:
            rows.append([str(run.seed), f"{run.wall_s:.0f} s", f"exit {run.returncode}", "-", "-", "-", "no"])
            continue
        accuracy = "-"
        if found.winner is not None and found.uniform is not None:
            accuracy = f"{100 * found.winner:.1f} / {100 * found.uniform:.1f}"
        gain = (
            "-"
            if found.low is None
            else f"{_points(found.gain)} [{_points(found.low)}, {_points(found.high)}]"
        )
        rows.append([str(run.seed), f"{run.wall_s:.0f} s", found.label, accuracy, gain, found.verdict,
                     "yes" if found.win else "no"])  # fmt: skip
    return rows


def render(runs: list[DemoRun], command: str, pip_cache: bool) -> str:
    from bench.results_md import machine, table

    first = runs[0]
    rows = [[name, f"{seconds:.0f} s"] for name, seconds in first.phases()]
    rows.append(["**total**", f"**{first.wall_s:.0f} s** ({first.wall_s / 60:.1f} min)"])
    verdict = "met" if first.returncode == 0 and first.wall_s < GOAL_S else "not met"
    lines = [
        f"Command: `{command}` ({datetime.date.today().isoformat()}, {machine()}; a fresh clone of HEAD, "
        f"an empty model cache, pip's cache {'kept' if pip_cache else 'off'}, no standard input; "
        f"{len(runs)} run(s): search seeds 0-{len(runs) - 1}, the first a first run, the others in the "
        "same clone with the model cached, each with its own database)",
        "",
        f"First run (search seed {first.seed}):",
        "",
        table(["phase", "wall"], rows),
        "",
        f"`make demo` exited {first.returncode}. Goal: under 10 minutes, first run included: **{verdict}**.",
        "",
        "Each run's confirmation (the demo's own line: the winner's test accuracy against uniform at "
        "the same budget, its paired gain in points with the 95% interval):",
        "",
        table(RUN_COLUMNS, run_rows(runs)),
    ]
    wins, (need, of) = sum(1 for r in runs if (c := r.confirmed()) and c.win), GOAL_WINS
    counted = f"Runs whose schedule beats uniform with a 95% interval above 0: **{wins} of {len(runs)}**"
    if len(runs) >= of:
        met = "met" if wins >= need * len(runs) / of else "not met"
        counted += f"; goal {need} of {of}: **{met}**"
    lines += ["", counted + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help="record the figures in bench/RESULTS.md")
    parser.add_argument("--pip-cache", action="store_true", help="let pip use its cache (a warm machine)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and its .venv")
    parser.add_argument("--runs", type=int, default=5, help="demos with search seeds 0..N-1 (default 5)")
    args = parser.parse_args()
    command = (
        "python bench/bench_demo.py"
        + "".join(f" {flag}" for flag, on in (("--write", args.write), ("--pip-cache", args.pip_cache)) if on)
        + (f" --runs {args.runs}" if args.runs != 5 else "")
    )
    workdir = Path(tempfile.mkdtemp(prefix="ranktune-demo-bench-"))
    runs: list[DemoRun] = []
    try:
        for seed in range(args.runs):
            runs.append(run_demo(workdir, args.pip_cache, seed))
            if runs[-1].returncode != 0:
                break
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    from bench.results_md import wrap, write_section

    body = wrap(render(runs, command, args.pip_cache))
    print("\n" + body)
    if args.write:
        write_section("Demo", body)
    sys.exit(0 if all(r.returncode == 0 for r in runs) else 1)


if __name__ == "__main__":
    main()
