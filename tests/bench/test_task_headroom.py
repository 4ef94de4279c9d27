"""Smoke test of bench/task_headroom.py on the tiny VLM with 2 steps."""

from __future__ import annotations

import pytest

from bench import task_headroom

pytestmark = pytest.mark.slow


def test_head_only_uniform_rank_8_and_full_fine_tuning_are_measured() -> None:
    rows = [task_headroom.measure("builtin:tiny-vlm", "builtin:digits-vqa", 2, rank) for rank in (0, 8, None)]
    assert [r["rank"] for r in rows] == [0, 8, None]
    assert rows[0]["trainable"] == 0 and rows[1]["trainable"] == 121_600  # tiny-vlm has no head
    assert rows[2]["trainable"] > 1_000_000  # every weight of the 1.2M-parameter model
    assert rows[0]["val"] == 0.0  # the untuned model answers nothing
    assert all(0.0 <= r["val"] <= 1.0 and r["wall_s"] > 0 for r in rows)
    text = task_headroom.render(rows, "cmd")
    assert "| builtin:digits-vqa | builtin:tiny-vlm | head only | 0 | 0.0 |" in text
    assert "uniform rank 8 | 121,600 |" in text and "after 2 steps" in text
    assert "| builtin:digits-vqa | builtin:tiny-vlm | full fine-tuning |" in text
