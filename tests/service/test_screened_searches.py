"""Shape screening through the REST API (SQLite and PostgreSQL): a search with ``screen`` leases the
coarse shapes right after uniform, then the combination of the parts that beat it; ``cascade`` screens
unless told not to."""

from __future__ import annotations

from typing import Any

from ranktune.search.schedule import RankSchedule
from ranktune.search.screening import ATTENTION_KINDS
from tests.service.api import Api, spec


def adapted(schedule: dict[str, Any]) -> set[tuple[str, str]]:
    """(tower, kind) of every site with an adapter."""
    parsed = RankSchedule.from_json(schedule)
    return {(s.tower, s.kind) for s, r in zip(parsed.sites, parsed.ranks, strict=True) if r > 0}


def test_a_screened_search_asks_the_coarse_questions_first(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=10, parallelism=1, screen=True, budget={"rank": 2})
    assert search["spec"]["screen"] is True
    uniform = api.claim()
    assert uniform is not None and uniform["trial_number"] == 0
    assert api.complete(uniform, 0.50).status_code == 200
    # The tiny VLM's shapes: the vision tower, the language tower (its two-site projector cannot hold
    # the budget alone), attention, MLP, lower and upper layers.
    seen, scores = [], {"vision": 0.30, "language": 0.60, "attention": 0.55, "mlp": 0.45}
    for number in range(1, 7):
        job = api.claim()
        assert job is not None and job["trial_number"] == number and job["kind"] == "proxy"
        assert job["proxy"]["seed"] == uniform["proxy"]["seed"]  # paired with uniform's data order
        parts = adapted(job["schedule"])
        towers, kinds = {t for t, _ in parts}, {k for _, k in parts}
        if towers == {"vision"}:
            name = "vision"
        elif towers == {"language"}:
            name = "language"
        elif kinds <= ATTENTION_KINDS:
            name = "attention"
        elif not kinds & ATTENTION_KINDS:
            name = "mlp"
        else:
            name = f"layers {number}"
        seen.append(name)
        assert api.complete(job, scores.get(name, 0.48)).status_code == 200
    assert seen[:4] == ["vision", "language", "attention", "mlp"]
    combined = api.claim()
    assert combined is not None and combined["trial_number"] == 7
    assert adapted(combined["schedule"]) == {("language", k) for k in ("q", "k", "v", "o")}
    budget = RankSchedule.from_json(uniform["schedule"]).parameter_count
    assert 0.97 * budget <= RankSchedule.from_json(combined["schedule"]).parameter_count <= budget


def test_cascade_screens_unless_told_not_to(api: Api) -> None:
    assert api.submit(strategy="cascade", max_trials=10)["spec"]["screen"] is True
    assert api.submit(strategy="cascade", max_trials=10, screen=False)["spec"]["screen"] is False
    assert api.submit(strategy="perfmodel", max_trials=10)["spec"]["screen"] is None
    response = api.post("/searches", spec(screen="often"))
    assert response.status_code == 422 and "screen" in response.text
