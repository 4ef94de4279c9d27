"""Paired confirmation statistics: outcome encoding, the gain's interval, its coverage under the null."""

from __future__ import annotations

import numpy as np
import pytest

from ranktune.search.confirm import ConfirmResult, describe_result, summarize
from ranktune.search.paired import OutcomesError, binomial_se, decode_outcomes, encode_outcomes, paired_gain


@pytest.mark.parametrize("n", [1, 7, 8, 9, 6000])
def test_outcomes_round_trip(n: int) -> None:
    outcomes = np.random.default_rng(n).random(n) < 0.6
    text = encode_outcomes(outcomes)
    assert text.startswith(f"{n}:")
    assert np.array_equal(decode_outcomes(text), outcomes)
    assert len(text) < n / 6 + 20  # about 1.4 characters per 8 outcomes


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "expected"), ("12", "expected"), ("0:", "expected"), ("x:AA==", "expected"),
     ("9:!!!!", "base64"), ("9:AA==", "cannot hold"), ("8:AAAA", "cannot hold")],
)  # fmt: skip
def test_bad_outcomes_are_refused(text: str, message: str) -> None:
    with pytest.raises(OutcomesError, match=message):
        decode_outcomes(text)


def correlated_runs(rng: np.random.Generator, n: int, seeds: int, lift: float) -> tuple[dict, dict]:
    """Examples of varied difficulty; a schedule right ``lift`` more often than uniform on every seed."""
    difficulty = rng.random(n)
    uniform, schedule = {}, {}
    for seed in range(seeds):
        u = rng.random(n) > difficulty * 0.6
        x = u | (rng.random(n) < lift)
        uniform[seed], schedule[seed] = (float(u.mean()), u), (float(x.mean()), x)
    return schedule, uniform


def test_a_two_point_gain_on_6000_examples_is_significant_and_covered() -> None:
    schedule, uniform = correlated_runs(np.random.default_rng(0), 6000, 3, lift=0.07)
    result = paired_gain(schedule, uniform)
    assert result is not None and result.method == "seeds x examples"
    assert (result.seeds, result.examples) == (3, 6000)
    true_gain = np.mean([schedule[s][0] - uniform[s][0] for s in range(3)])
    assert result.gain == pytest.approx(true_gain)
    assert 0.015 < result.gain < 0.03 and result.low is not None and result.high is not None
    assert 0 < result.low < result.gain < result.high and result.verdict == "significant gain"
    worse = paired_gain(uniform, schedule)
    assert worse is not None and worse.verdict == "significantly worse"
    minimized = paired_gain(schedule, uniform, sign=-1.0)
    assert minimized is not None and minimized.gain == pytest.approx(-result.gain)


def test_the_interval_holds_0_about_95_percent_of_the_time_under_the_null() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(300):
        difficulty = rng.random(400)
        runs = [{s: rng.random(400) > difficulty for s in range(3)} for _ in range(2)]
        schedule, uniform = ({s: (float(o.mean()), o) for s, o in r.items()} for r in runs)
        result = paired_gain(schedule, uniform)
        assert result is not None and result.low is not None and result.high is not None
        covered += result.low <= 0 <= result.high
    assert 0.91 <= covered / 300 <= 0.99


def test_one_seed_covers_the_examples_only_and_rows_without_outcomes_pair_by_seed() -> None:
    schedule, uniform = correlated_runs(np.random.default_rng(2), 1000, 1, lift=0.0)
    one = paired_gain(schedule, uniform)
    assert one is not None and one.method == "examples (one seed)" and one.gain == 0.0
    assert one.to_json()["verdict"] == "no significant difference"
    by_seed = paired_gain({0: (0.80, None), 1: (0.72, None)}, {0: (0.70, None), 1: (0.71, None)})
    assert by_seed is not None and by_seed.method == "seeds" and by_seed.examples is None
    assert by_seed.gain == pytest.approx(0.055) and by_seed.verdict == "no significant difference"  # 1 df
    steady = paired_gain({0: (0.80, None), 1: (0.82, None)}, {0: (0.70, None), 1: (0.71, None)})
    assert steady is not None and steady.verdict == "significant gain"  # differences 0.10 and 0.11
    assert paired_gain({0: (0.8, None)}, {1: (0.7, None)}) is None  # no seed in common


def test_summarize_pairs_each_schedule_with_uniform() -> None:
    schedule, uniform = correlated_runs(np.random.default_rng(3), 6000, 2, lift=0.07)
    runs = [ConfirmResult(0, s, v, o) for s, (v, o) in uniform.items()]
    runs += [ConfirmResult(5, s, v, o) for s, (v, o) in schedule.items()]
    result = summarize(runs, "maximize")
    assert result is not None and result["winner"]["trial_number"] == 5
    assert result["paired"]["verdict"] == "significant gain" and result["paired"]["examples"] == 6000
    assert result["paired"]["ci"][0] > 0 and result["paired"]["confidence"] == 0.95
    assert result["winner"]["se"] == pytest.approx(binomial_se(result["winner"]["mean"], 12000))
    low, high = (100 * v for v in result["paired"]["ci"])
    assert describe_result(result) == (
        f"trial 5: gain {100 * result['paired']['gain']:+.1f} points (95% CI {low:+.1f} to {high:+.1f}, "
        "paired over 2 seeds x 6,000 examples): significant gain"
    )


def test_the_description_says_when_uniform_was_kept_and_when_there_is_no_interval() -> None:
    same = [ConfirmResult(n, s, v) for n, s, v in [(0, 1, 0.80), (0, 2, 0.70), (4, 1, 0.79), (4, 2, 0.72)]]
    result = summarize(same, "maximize")
    assert result is not None and result["winner"]["trial_number"] == 4  # 0.755 beats 0.75
    assert describe_result(result).endswith("paired over 2 seeds): no significant difference")
    kept = summarize([ConfirmResult(0, 1, 0.8), ConfirmResult(3, 1, 0.7)], "maximize")
    assert kept is not None and describe_result(kept) == (
        "uniform kept; best other, trial 3: gain -10.0 points "
        "(paired over 1 seed; too few seeds for an interval)"
    )


def test_float_outcomes_travel_and_pair_for_a_minimized_loss() -> None:
    rng = np.random.default_rng(5)
    losses = rng.gamma(2.0, 0.5, 300)  # per-example losses, uniform's
    text = encode_outcomes(losses)
    assert text.startswith("f32:300:") and decode_outcomes(text) == pytest.approx(losses, rel=1e-6)
    nan = "f32:1:AADAfw=="  # one float32 NaN
    for bad, message in [("f32:2:AAAA", "cannot hold"), ("f32:x:AA==", "expected"), (nan, "finite")]:
        with pytest.raises(OutcomesError, match=message):
            decode_outcomes(bad)
    runs = []
    for seed in range(2):
        uniform = losses + rng.normal(0, 0.05, 300)
        better = uniform - 0.1 + rng.normal(0, 0.05, 300)  # a lower loss on every example
        for number, values in ((0, uniform), (7, better)):
            sent = decode_outcomes(encode_outcomes(values))  # as a worker's result carries them
            runs.append(ConfirmResult(number, seed, float(values.mean()), sent))
    result = summarize(runs, "minimize")
    assert result is not None and result["winner"]["trial_number"] == 7
    paired = result["paired"]
    assert paired["method"] == "seeds x examples" and paired["verdict"] == "significant gain"
    assert paired["gain"] == pytest.approx(0.1, abs=0.01) and paired["ci"][0] > 0  # better is positive
    winner = [r.outcomes for r in runs if r.confirms == 7]
    assert result["winner"]["se"] == pytest.approx(np.concatenate(winner).std(ddof=1) / np.sqrt(600))
    assert describe_result(result, "eval_loss").startswith(f"trial 7: gain {paired['gain']:+.3g} (95% CI")


def test_a_real_seed_effect_widens_the_interval_enough_to_keep_coverage() -> None:
    rng = np.random.default_rng(4)
    covered, widths = 0, []
    for _ in range(200):
        difficulty = rng.random(600)
        schedule, uniform = {}, {}
        for seed in range(4):
            shift = rng.normal(0, 0.04)  # this seed's training luck, shared by all its examples
            u = rng.random(600) > difficulty
            x = rng.random(600) > np.clip(difficulty - shift, 0, 1)
            uniform[seed], schedule[seed] = (float(u.mean()), u), (float(x.mean()), x)
        result = paired_gain(schedule, uniform)
        assert result is not None and result.low is not None and result.high is not None
        covered += result.low <= 0 <= result.high
        widths.append(result.high - result.low)
    assert covered / 200 >= 0.9
    assert np.median(widths) > 0.06  # wider than examples alone would make it (about 0.05 here)


def test_spearman_interval_brackets_the_estimate() -> None:
    from ranktune.search.perfmodel import spearman, spearman_interval

    rng = np.random.default_rng(5)
    a = rng.random(30)
    b = a + rng.normal(0, 0.3, 30)
    interval = spearman_interval(a, b)
    rho = spearman(a, b)
    assert interval is not None and rho is not None and interval[0] < rho < interval[1] <= 1.0
    assert spearman_interval(a, a) == (1.0, 1.0)  # every resample is perfectly ranked
    assert spearman_interval(a[:3], b[:3]) is None
    unrelated = spearman_interval(a, rng.random(30))
    assert unrelated is not None and unrelated[0] < 0 < unrelated[1]
