"""Smoke test of bench/paired_coverage.py: a few simulations through the real paired_gain."""

from __future__ import annotations

import numpy as np

from bench import paired_coverage


def test_simulations_report_coverage_and_width() -> None:
    rng = np.random.default_rng(0)
    rows = [paired_coverage.simulate(seeds, effect, 500, 40, rng) for seeds, effect in ((1, 0.0), (3, 0.04))]
    assert all(0.0 <= r["coverage"] <= 1.0 and r["median_width"] > 0 for r in rows)
    assert rows[0]["coverage"] >= 0.8  # no seed effect: close to 95% even over 40 draws
    assert rows[1]["median_width"] > rows[0]["median_width"] / 2  # 3 seeds, but a seed effect to cover
    text = paired_coverage.render(rows, "cmd")
    assert "| 3 | 4 | 500 | 40 |" in text and "Command: `cmd`" in text
