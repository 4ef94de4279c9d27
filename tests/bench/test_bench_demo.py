"""bench/bench_demo.py's reading of a demo's output: phases from time-stamped lines, the result."""

from __future__ import annotations

from bench.bench_demo import DemoRun, render

LINES = [
    (0.5, "python3 -m venv .venv"),
    (150.0, ".venv/bin/ranktune demo --exit"),
    (240.0, "ranktune server on http://127.0.0.1:4321 (dashboard), database sqlite:///x.db"),
    (241.0, "search 1: 10 proxy trials of 100 steps, strategy perfmodel, budget 121,600 params"),
    (420.0, "best schedule (trial 7): 121,296 params"),
    (
        421.0,
        "confirmed accuracy (240 steps, 2 seeds, test split held out from the search): winner "
        "0.612 ± 0.011, uniform rank-8 LoRA 0.598 ± 0.004, gain +0.014",
    ),
]


def test_phases_split_the_wall_time_at_the_demos_own_lines() -> None:
    run = DemoRun(wall_s=430.0, returncode=0, lines=LINES)
    assert [round(seconds) for _, seconds in run.phases()] == [150, 90, 180, 10]
    assert run.confirmed() == {"winner": 0.612, "winner_std": 0.011, "uniform": 0.598,
                               "uniform_std": 0.004, "gain": 0.014}  # fmt: skip
    text = render(run, "python bench/bench_demo.py", pip_cache=False)
    assert "**430 s** (7.2 min)" in text and "**met**" in text and "pip's cache off" in text
    assert "the winner gained +0.014 over uniform" in text


def test_a_demo_that_stops_early_gives_the_rest_to_the_phase_it_was_in() -> None:
    run = DemoRun(wall_s=700.0, returncode=2, lines=LINES[:2])
    assert [round(seconds) for _, seconds in run.phases()] == [150, 550]
    assert run.confirmed() is None
    assert "**not met**" in render(run, "cmd", pip_cache=True)
