"""bench/search_synthetic.py on a tiny configuration: real searches, true gains, the rendered table."""

from __future__ import annotations

import itertools

from bench import search_synthetic as bench
from ranktune.search.strategies import ModelSettings


def test_variants_parse_into_perfmodel_settings() -> None:
    variant = bench.parse_variant("wide:pool=64,kappa=0,acquisition=ei")
    assert variant == bench.Variant("wide", "perfmodel", ModelSettings(pool=64, kappa=0.0, acquisition="ei"))


def test_a_small_run_reports_best_so_far_true_gains() -> None:
    variants = [bench.Variant("random", "random"), bench.Variant("tpe", "tpe"),
                bench.parse_variant("early model:min_trials=4")]  # fmt: skip
    results = bench.run(variants, seeds=2, trials=8, parallel=2, noise=0.0)
    for entry in results.values():
        assert len(entry["curves"]) == 2
        for curve in entry["curves"]:
            assert len(curve) == 8 and curve[0] == 0.0  # trial 0 is uniform itself
            assert all(b >= a for a, b in itertools.pairwise(curve))  # noiseless: never worse
    text = bench.render(results, "cmd", seeds=2, trials=8, parallel=2, noise=0.0)
    assert "| early model |" in text and "best true gain after 8" in text and "1.00x" in text


def test_reach_counts_trials_until_the_target() -> None:
    assert bench.reach([0.0, 0.1, 0.3], 0.3) == 3
    assert bench.reach([0.0, 0.1], 0.3) is None
