"""``ranktune plan``: formats, and one clear line with exit code 2 on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ranktune.search.schedule import RankSchedule
from ranktune.service.cli import app

runner = CliRunner()
RANKTUNE = str(Path(sys.executable).parent / "ranktune")


def plan(*args: str):
    return runner.invoke(app, ["plan", "--model", "builtin:tiny-vlm", *args])


def test_table_shows_every_tower_and_the_budget() -> None:
    result = plan("--budget-rank", "8")
    assert result.exit_code == 0, result.output
    for word in (
        "vision (24 sites)",
        "projector (2 sites)",
        "language (28 sites)",
        "100.0% of the uniform rank 8",
    ):
        assert word in result.output


def test_json_is_the_schedule() -> None:
    result = plan("--budget-rank", "8", "--strategy", "random", "--seed", "3", "--format", "json")
    assert result.exit_code == 0, result.output
    schedule = RankSchedule.from_json(json.loads(result.stdout))
    assert 0.97 * 121_600 <= schedule.parameter_count <= 121_600
    assert len(set(schedule.ranks)) > 1


def test_towers_and_grid_options() -> None:
    result = plan("--budget-rank", "4", "--grid", "0,2,4,8", "--towers", "language", "--format", "json")
    assert result.exit_code == 0, result.output
    schedule = RankSchedule.from_json(json.loads(result.stdout))
    assert {s.tower for s in schedule.sites} == {"language"} and set(schedule.ranks) == {4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "builtin:nope", "--budget-rank", "8"], "model: unknown built-in model"),
        (["--model", "/no/such/model", "--budget-rank", "8"], "model: cannot resolve"),
        (["--model", "builtin:tiny-vlm", "--budget-params", "10"], "too small for any adapter"),
        (["--model", "builtin:tiny-vlm", "--budget-rank", "8", "--grid", "0,x"], "grid: expected"),
        (["--model", "builtin:tiny-vlm", "--budget-rank", "10"], "budget.rank: 10 is not in the grid"),
        (["--model", "builtin:tiny-vlm"], "budget: pass --budget-rank"),
        (["--model", "builtin:tiny-vlm", "--budget-rank", "8", "--towers", "audio"], "towers: 'audio'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_console_script_prints_a_config_peft_accepts() -> None:
    """The issue's acceptance command, run as a user runs it."""
    from peft import LoraConfig

    env = {**os.environ, "NO_COLOR": "1"}
    done = subprocess.run(
        [RANKTUNE, "plan", "--model", "builtin:tiny-vlm", "--budget-rank", "8", "--format", "peft"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads(done.stdout)
    assert config.pop("peft_type") == "LORA"
    lora = LoraConfig(**config)
    assert lora.r == 8 and len(lora.target_modules) == 54 and len(lora.rank_pattern) == 54


def test_console_script_error_has_no_traceback() -> None:
    done = subprocess.run(
        [RANKTUNE, "plan", "--model", "builtin:nope", "--budget-rank", "8"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
