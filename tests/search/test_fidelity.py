"""Rungs and asynchronous successive halving over frozen history."""

from __future__ import annotations

import pytest

from ranktune.search.fidelity import Fidelity, FidelityError, Promotion, RungEntry, next_promotion, promotable


@pytest.mark.parametrize(
    ("min_steps", "max_steps", "eta", "rungs"),
    [
        (50, 600, 3, (50, 150, 600)),  # 450 is within 1.5x of 600: merged into the top rung
        (50, 1350, 3, (50, 150, 450, 1350)),
        (100, 100, 3, (100,)),
        (10, 1000, 2, (10, 20, 40, 80, 160, 320, 640, 1000)),
    ],
)
def test_rungs_grow_by_eta_and_end_at_max_steps(
    min_steps: int, max_steps: int, eta: int, rungs: tuple
) -> None:
    fidelity = Fidelity(min_steps, max_steps, eta)
    assert fidelity.rungs == rungs and fidelity.top == len(rungs) - 1
    assert [fidelity.steps(k) for k in range(len(rungs))] == list(rungs)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((0, 600, 3), "fidelity.min_steps"),
        ((100, 50, 3), "fidelity.max_steps"),
        ((50, 600, 1), "fidelity.eta"),
    ],
)
def test_bad_fidelities_name_the_field(args: tuple[int, int, int], field: str) -> None:
    with pytest.raises(FidelityError, match=f"^{field}: "):
        Fidelity(*args)


def test_compute_counts_only_the_added_steps_when_promoted_runs_resume() -> None:
    fidelity = Fidelity(50, 600, 3)  # rungs 50, 150, 600
    counts = {0: 27, 1: 9, 2: 3}
    assert fidelity.full_run_equivalents(counts, resume=False) == pytest.approx(
        (27 * 50 + 9 * 150 + 3 * 600) / 600
    )
    assert fidelity.full_run_equivalents(counts, resume=True) == pytest.approx(
        (27 * 50 + 9 * 100 + 3 * 450) / 600
    )


def entries(rung: int, scores: dict[int, float]) -> list[RungEntry]:
    return [RungEntry(config, rung, score) for config, score in scores.items()]


def test_nothing_is_promoted_before_eta_runs_finished_a_rung() -> None:
    assert next_promotion(entries(0, {1: 0.9, 2: 0.5}), eta=3, top=2) is None
    assert next_promotion(entries(0, {1: 0.9, 2: 0.5, 3: 0.7}), eta=3, top=2) == Promotion(1, 1)


def test_the_top_third_goes_up_once_and_the_highest_rung_first() -> None:
    bottom = entries(0, {c: c / 10 for c in range(1, 10)})  # config 9 best, then 8, 7
    middle = entries(1, {9: 0.5, 8: 0.8, 7: 0.6})
    # From rung 1, config 8 (best of 3) goes to rung 2 before anything moves from rung 0.
    assert promotable([*bottom, *middle], eta=3, top=2) == [Promotion(8, 2)]
    assert next_promotion([*bottom, *middle], eta=3, top=2, started=[(8, 2)]) is None
    # A tenth and eleventh run at rung 0 do not change the quota (floor(11/3) = 3) ...
    more = [*bottom, *entries(0, {10: 0.05, 11: 0.95})]
    # ... but config 11 now ranks first: it is promoted even though three others went before it.
    assert promotable(more, eta=3, top=2, started=[(9, 1), (8, 1), (7, 1)]) == [Promotion(11, 1)]


def test_running_promotions_are_not_handed_out_twice_and_the_top_rung_never_promotes() -> None:
    bottom = entries(0, {1: 0.1, 2: 0.2, 3: 0.3})
    assert promotable(bottom, eta=3, top=1, started=[(3, 1)]) == []
    top = entries(1, {1: 0.1, 2: 0.2, 3: 0.3})
    assert promotable(top, eta=3, top=1) == []


def test_ties_go_to_the_older_config() -> None:
    assert next_promotion(entries(0, {5: 0.5, 2: 0.5, 7: 0.5}), eta=3, top=2) == Promotion(2, 1)
