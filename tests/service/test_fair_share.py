"""Fair sharing of claims between searches through the REST API, on SQLite and PostgreSQL: claims take
turns between searches with trials queued, a late search is served within one round, priorities
weight the turns, and ``parallelism`` still caps every search."""

from __future__ import annotations

from typing import Any

from ranktune.service.queue_filler import fill_once
from tests.service.api import Api, spec


def filled(api: Api, search_id: int, queued: int) -> None:
    """Run the queue filler's ticks until the search has ``queued`` trials queued."""
    assert api.app is not None
    for _ in range(20):
        if api.search(search_id)["trials"]["queued"] >= queued:
            return
        fill_once(api.app)
    raise AssertionError(f"search {search_id} never reached {queued} queued trials")


def claims(api: Api, count: int) -> list[dict[str, Any]]:
    jobs = [api.claim(f"w{i}") for i in range(count)]
    assert all(job is not None for job in jobs)
    return jobs  # type: ignore[return-value]


def test_a_search_behind_a_big_one_is_served_within_one_round_and_they_alternate(api: Api) -> None:
    big = api.submit(name="big", max_trials=10_000, parallelism=64)["id"]
    filled(api, big, 64)
    assert [job["search_id"] for job in claims(api, 3)] == [big] * 3
    small = api.submit(name="small", max_trials=8, parallelism=4)["id"]
    turns = claims(api, 8)
    assert [job["search_id"] for job in turns] == [big, small] * 4
    # The small search has its 4 trials running: parallelism holds, the big one gets every claim.
    assert {job["search_id"] for job in claims(api, 6)} == {big}
    counts = api.search(small)["trials"]
    assert counts["running"] == 4 and counts["queued"] == 0
    # A finished trial frees a slot: its replacement is served within one round, not after 50 others.
    assert api.complete(turns[1]).status_code == 200
    assert small in [job["search_id"] for job in claims(api, 2)]
    assert api.search(small)["trials"]["running"] == 4


def test_priorities_weight_the_turns(api: Api) -> None:
    low = api.submit(name="low", max_trials=100, parallelism=32)["id"]
    high = api.submit(name="high", max_trials=100, parallelism=32, priority=3)["id"]
    assert api.search(high)["spec"]["priority"] == 3 and api.search(low)["spec"]["priority"] == 1
    filled(api, low, 32)
    filled(api, high, 32)
    served = [job["search_id"] for job in claims(api, 40)]
    assert (served.count(high), served.count(low)) == (30, 10)  # three leases for each one
    assert served[:8].count(high) == 6, "the turns are spread, not one search after the other"


def test_a_requeued_trial_goes_out_first(api: Api) -> None:
    first = api.submit(name="first", max_trials=20, parallelism=8)["id"]
    second = api.submit(name="second", max_trials=20, parallelism=8)["id"]
    jobs = claims(api, 4)
    assert [job["search_id"] for job in jobs] == [first, second, first, second]
    assert api.fail(jobs[3], retryable=True).json()["requeued"] is True
    again = api.claim()
    assert again is not None and again["trial_id"] == jobs[3]["trial_id"] and again["attempt"] == 2


def test_priority_out_of_range_is_a_422_naming_it(api: Api) -> None:
    for priority in (0, 101, "high"):
        response = api.post("/searches", spec(priority=priority))
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "priority"]
