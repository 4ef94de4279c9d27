"""bench/reproduce.py's choice of the schedules to re-train: what each stored search confirmed."""

from __future__ import annotations

import pytest

from bench.reproduce import winners


def protocol(confirms: dict[str, list[int]] | None) -> dict:
    trials = [
        {"number": 0, "ranks": [2, 2], "objective": 0.40},
        {"number": 1, "ranks": [4, 0], "objective": 0.45},  # the proxy-best
        {"number": 2, "ranks": [0, 4], "objective": 0.44},  # confirmed after rechecks (best mean)
    ]
    figures: dict = {"trials": {"0": trials, "1": trials[:1]}}
    if confirms is not None:
        figures["confirms"] = confirms
    return {"tasks": {"digits": {"strategies": {"perfmodel+recheck": figures}}}}


def test_the_confirmed_schedule_wins_over_the_proxy_best() -> None:
    found = winners(protocol({"0": [0, 2], "1": [0]}), "digits", "perfmodel+recheck")
    assert found == {0: (0, 4), 1: (2, 2)}  # search 1 confirmed uniform only: its proxy-best is uniform


def test_protocols_without_confirmations_fall_back_to_the_proxy_best() -> None:
    assert winners(protocol(None), "digits", "perfmodel+recheck")[0] == (4, 0)


def test_an_unknown_strategy_is_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="'tpe' is not in the protocol"):
        winners(protocol(None), "digits", "tpe")
