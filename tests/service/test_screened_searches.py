"""Shape screening through the REST API (SQLite and PostgreSQL): a search with ``screen`` leases the
coarse shapes right after uniform, then the combination of the parts that beat it; ``cascade`` screens
unless told not to."""

from __future__ import annotations

from typing import Any

from ranktune.search.schedule import RankSchedule
from tests.service.api import Api, spec


def adapted(schedule: dict[str, Any]) -> set[tuple[str, str]]:
    """(tower, kind) of every site with an adapter."""
    parsed = RankSchedule.from_json(schedule)
    return {(s.tower, s.kind) for s, r in zip(parsed.sites, parsed.ranks, strict=True) if r > 0}


def test_a_screened_search_narrows_one_factor_at_a_time(api: Api) -> None:
    """The tiny VLM at rank 2: the towers first (its two-site projector cannot hold the budget alone),
    then the kinds within the tower that won, each at the exact budget."""
    api.submit(strategy="random", max_trials=10, parallelism=1, screen=True, budget={"rank": 2})
    uniform = api.claim()
    assert uniform is not None and uniform["trial_number"] == 0
    assert api.complete(uniform, 0.50).status_code == 200
    language_attention = {("language", k) for k in ("q", "k", "v", "o")}
    asked = []
    for number in (1, 2, 3):
        job = api.claim()
        assert job is not None and job["trial_number"] == number and job["kind"] == "proxy"
        assert job["proxy"]["seed"] == uniform["proxy"]["seed"]  # paired with uniform's data order
        parts = adapted(job["schedule"])
        asked.append(parts)
        towers = {t for t, _ in parts}
        score = 0.7 if parts == language_attention else 0.6 if towers == {"language"} else 0.3
        assert api.complete(job, score).status_code == 200
    assert {t for t, _ in asked[0]} == {"vision"} and {t for t, _ in asked[1]} == {"language"}
    assert asked[1] > language_attention and asked[2] == language_attention
    budget = RankSchedule.from_json(uniform["schedule"]).parameter_count
    assert 0.97 * budget <= RankSchedule.from_json(job["schedule"]).parameter_count <= budget


def test_cascade_and_perfmodel_screen_unless_told_not_to(api: Api) -> None:
    assert api.submit(strategy="cascade", max_trials=10)["spec"]["screen"] is True
    assert api.submit(strategy="cascade", max_trials=10, screen=False)["spec"]["screen"] is False
    assert api.submit(strategy="perfmodel", max_trials=10)["spec"]["screen"] is True
    assert api.submit(strategy="perfmodel", max_trials=10, screen=False)["spec"]["screen"] is False
    assert api.submit(strategy="tpe", max_trials=10)["spec"]["screen"] is None
    response = api.post("/searches", spec(screen="often"))
    assert response.status_code == 422 and "screen" in response.text
