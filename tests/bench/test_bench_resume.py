"""bench/bench_resume.py on the real built-in VLM, tiny: both ways trained, summarized, and resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_resume import full_run_equivalents, main


def test_resumed_rungs_cost_only_the_steps_they_add() -> None:
    rungs = (66, 198, 600)
    assert full_run_equivalents(rungs, {0: 9, 1: 3, 2: 1}, resume=False) == pytest.approx(
        (9 * 66 + 3 * 198 + 600) / 600
    )
    assert full_run_equivalents(rungs, {0: 9, 1: 3, 2: 1}, resume=True) == pytest.approx(
        (9 * 66 + 3 * 132 + 402) / 600
    )


@pytest.mark.slow
def test_both_ways_are_trained_once_and_summarized(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, summary = tmp_path / "resume.jsonl", tmp_path / "resume.json"
    args = ["--task", "tiny-vlm", "--schedules", "3", "--rungs", "3,6", "--jobs", "1", "--store", str(store)]
    main([*args, "--json", str(summary)])
    lines = store.read_text().splitlines()
    assert len(lines) == 6  # 3 chains and 3 runs of 6 steps from the start
    results = json.loads(summary.read_text())
    (row,) = results["rows"]
    assert row["steps"] == 6 and row["from"] == 3
    assert 0.0 <= row["scratch_mean"] <= 1.0 and 0.0 <= row["resumed_mean"] <= 1.0
    assert row["resumed_wall"] > 0 and row["scratch_wall"] > 0  # timed; too short here to compare
    chains = [json.loads(line) for line in lines if '"kind":"chain"' in line]
    assert all(len(c["extra"]["metrics"]) == 2 for c in chains)
    assert "resumed - scratch" in capsys.readouterr().out
    main(args)  # everything is in the store: nothing is trained again
    assert store.read_text().splitlines() == lines
