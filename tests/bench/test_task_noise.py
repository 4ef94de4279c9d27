"""Smoke test of bench/task_noise.py: two 2-step seeds of digits-vqa into a store, then the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import task_noise

pytestmark = pytest.mark.slow


def test_two_seeds_give_one_null_pair(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "noise.jsonl"
    args = ["--tasks", "builtin:digits-vqa", "--seeds", "2", "--steps", "2", "--store", str(store)]
    task_noise.main(args)
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 2 and all(r["extra"]["outcomes"].startswith("800:") for r in records)
    key = json.loads(records[0]["key"])
    assert len(key["base"]) == 64 and len(key["data"]) == 64 and key["steps"] == 2
    text = capsys.readouterr().out
    assert f"| builtin:digits-vqa | `{key['base'][:8]}` | 2 | 800 | 2 |" in text  # this machine's base
    task_noise.main([*args, "--no-run"])  # rendered from the store alone, nothing trained again
    assert len(store.read_text().splitlines()) == 2
