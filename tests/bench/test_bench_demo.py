"""bench/bench_demo.py's reading of a demo's output: phases from time-stamped lines, the result."""

from __future__ import annotations

from bench.bench_demo import DemoRun, render

LINES = [
    (0.5, "python3 -m venv .venv"),
    (150.0, ".venv/bin/ranktune demo --exit --seed 0 --out ranktune-out-0"),
    (240.0, "ranktune server on http://127.0.0.1:4321 (dashboard), database sqlite:///x.db"),
    (241.0, "search 1: 10 proxy trials of 100 steps, strategy perfmodel, budget 30,400 params"),
    (420.0, "best schedule (trial 7): 30,296 params"),
    (
        421.0,
        "confirmed accuracy (400 steps, 3 seeds, test split held out from the search): winner "
        "0.612 ± 0.011, uniform rank-2 LoRA 0.598 ± 0.004",
    ),
    (
        421.5,
        "confirmed: trial 7: gain +1.4 points (95% CI +0.6 to +2.2, paired over 3 seeds x 800 examples): "
        "significant gain",
    ),
]
KEPT = [*LINES[:5], (421.0, "confirmed: uniform kept: no other schedule was confirmed")]
NOT_SIGNIFICANT = [
    *LINES[:6],
    (
        421.5,
        "confirmed: uniform kept; best other, trial 4: gain -0.5 points (95% CI -1.9 to +0.9, paired over "
        "3 seeds x 800 examples): no significant difference",
    ),
]


def test_phases_split_the_wall_time_at_the_demos_own_lines() -> None:
    run = DemoRun(wall_s=430.0, returncode=0, lines=LINES)
    assert [round(seconds) for _, seconds in run.phases()] == [150, 90, 180, 10]
    found = run.confirmed()
    assert found is not None and found.win and not found.uniform_kept
    assert (found.gain, found.low, found.high) == (1.4, 0.6, 2.2)
    assert (found.winner, found.uniform) == (0.612, 0.598)
    assert found.sample == "3 seeds x 800 examples" and found.verdict == "significant gain"
    text = render([run], "python bench/bench_demo.py", pip_cache=False)
    assert "**430 s** (7.2 min)" in text and "**met**" in text and "pip's cache off" in text
    assert "| 0 | 430 s | trial 7 | 61.2 / 59.8 | +1.4 [+0.6, +2.2] | significant gain | yes |" in text


def test_five_runs_count_the_wins_against_the_goal() -> None:
    runs = [DemoRun(wall_s=430.0, returncode=0, lines=LINES, seed=0)]
    runs += [DemoRun(wall_s=300.0, returncode=0, lines=LINES, seed=s) for s in (1, 2)]
    runs += [DemoRun(wall_s=300.0, returncode=0, lines=KEPT, seed=3)]
    runs += [DemoRun(wall_s=300.0, returncode=0, lines=NOT_SIGNIFICANT, seed=4)]
    assert [r.confirmed().win for r in runs] == [True, True, True, False, False]  # type: ignore[union-attr]
    text = render(runs, "python bench/bench_demo.py", pip_cache=False)
    assert "**3 of 5**; goal 4 of 5: **not met**" in text
    assert "| 3 | 300 s | uniform kept | - | - | uniform kept: no other schedule was confirmed | no |" in text
    assert "| 4 | 300 s | uniform kept; best other, trial 4 | 61.2 / 59.8 | -0.5 [-1.9, +0.9] |" in text
    runs[3] = DemoRun(wall_s=300.0, returncode=0, lines=LINES, seed=3)
    assert "**4 of 5**; goal 4 of 5: **met**" in render(runs, "cmd", pip_cache=False)


def test_a_demo_that_stops_early_gives_the_rest_to_the_phase_it_was_in() -> None:
    run = DemoRun(wall_s=700.0, returncode=2, lines=LINES[:2])
    assert [round(seconds) for _, seconds in run.phases()] == [150, 550]
    assert run.confirmed() is None
    text = render([run], "cmd", pip_cache=True)
    assert "**not met**" in text and "| 0 | 700 s | exit 2 |" in text
