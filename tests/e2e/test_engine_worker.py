"""The worker's side of dynamic mode (the whole flow runs in tests/e2e/test_demo.py)."""

from __future__ import annotations

from ranktune.trainer.worker.loop import dynamic_steps


def test_dynamic_steps_fall_inside_training() -> None:
    job = {"proxy": {"steps": 200}, "dynamic": {"at": [0.33, 0.66]}}
    assert dynamic_steps(job) == (66, 132)
    assert dynamic_steps({"proxy": {"steps": 2}, "dynamic": {"at": [0.1, 0.9]}}) == (1,)
    assert dynamic_steps({"proxy": {"steps": 200}, "dynamic": None}) == ()
