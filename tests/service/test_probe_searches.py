"""The importance probe through the REST API on SQLite and PostgreSQL: one probe lease after the
uniform baseline, over-ranked, reporting its adapters at the end; the next proposal allocates rank by
what it found, under the budget; a probe that fails or reports nothing usable leaves the search going."""

from __future__ import annotations

from typing import Any

import pytest

from ranktune.search.schedule import RankSchedule
from tests.service.api import Api


def complete(api: Api, job: dict[str, Any], accuracy: float = 0.5) -> None:
    assert api.complete(job, accuracy).status_code == 200


def language_heavy_stats(schedule: dict[str, Any]) -> dict[str, Any]:
    """‖B·A‖ per site as a worker reports it: the language tower's MLP matters, the rest barely."""
    parsed = RankSchedule.from_json(schedule)
    return {
        s.name: {"delta_norm": 5.0 if s.tower == "language" and s.kind in ("gate", "up", "down") else 0.05,
                 "rank": r}
        for s, r in zip(parsed.sites, parsed.ranks, strict=True)
    }  # fmt: skip


def share(schedule: dict[str, Any], wanted: Any) -> float:
    parsed = RankSchedule.from_json(schedule)
    cost = {s.name: s.params_per_rank * r for s, r in zip(parsed.sites, parsed.ranks, strict=True)}
    return sum(c for s in parsed.sites if wanted(s) for c in [cost[s.name]]) / sum(cost.values())


def is_language_mlp(site: Any) -> bool:
    return bool(site.tower == "language" and site.kind in ("gate", "up", "down"))


def test_the_probe_runs_after_uniform_and_its_allocation_comes_next(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=5, parallelism=1, probe={})
    uniform = api.claim()
    assert uniform is not None and uniform["trial_number"] == 0
    complete(api, uniform)
    job = api.claim()
    assert job is not None
    assert (job["kind"], job["trial_number"], job["eval_split"]) == ("probe", 1, "val")
    assert job["dynamic"] == {"at": [1.0]} and job["proxy"]["steps"] == 200  # the proxy's length
    probe_ranks = RankSchedule.from_json(job["schedule"]).ranks
    assert max(probe_ranks) == 2 * max(RankSchedule.from_json(uniform["schedule"]).ranks)  # 16 against 8
    stats = language_heavy_stats(job["schedule"])
    assert api.heartbeat(job, step=199, site_stats=stats).json()["action"] == "continue"
    complete(api, job, 0.4)
    allocated = api.claim()
    assert allocated is not None and allocated["kind"] == "proxy" and allocated["trial_number"] == 2
    before = share(uniform["schedule"], is_language_mlp)
    after = share(allocated["schedule"], is_language_mlp)
    assert after > before + 0.2, (before, after)  # rank moved to where the probe saw it matter
    budget = RankSchedule.from_json(uniform["schedule"]).parameter_count
    assert 0.97 * budget <= RankSchedule.from_json(allocated["schedule"]).parameter_count <= budget
    complete(api, allocated)
    for _ in range(2):
        job = api.claim()
        assert job is not None and job["schedule"] != allocated["schedule"]  # proposed once
        complete(api, job)
    found = api.search(search["id"])
    assert found["state"] == "finished" and found["trials"]["succeeded"] == 5
    kinds = {t["number"]: t["kind"] for t in api.trials(search["id"])}
    assert kinds == {0: "proxy", 1: "probe", 2: "proxy", 3: "proxy", 4: "proxy"}
    best = next(t for t in api.trials(search["id"]) if t["id"] == found["best_trial_id"])
    assert best["kind"] == "proxy"  # the probe is over the budget: never the result


@pytest.mark.parametrize("outcome", ["failed", "no statistics"])
def test_a_probe_without_findings_leaves_the_strategy_in_charge(api: Api, outcome: str) -> None:
    search = api.submit(strategy="random", max_trials=4, parallelism=1, max_attempts=1, probe={"steps": 30})
    complete(api, api.claim() or {})
    job = api.claim()
    assert job is not None and job["kind"] == "probe" and job["proxy"]["steps"] == 30
    if outcome == "failed":
        assert api.fail(job, "CUDA out of memory", retryable=False).status_code == 200
    else:
        complete(api, job)
    while (job := api.claim()) is not None:
        complete(api, job)
    found = api.search(search["id"])
    assert found["state"] == "finished"
    assert [t["kind"] for t in api.trials(search["id"])] == ["proxy", "probe", "proxy", "proxy"]


def test_with_fidelity_the_probe_trains_the_second_rung(api: Api) -> None:
    fidelity = {"min_steps": 20, "max_steps": 180, "eta": 3}
    api.submit(
        strategy="random", max_trials=6, parallelism=2, fidelity=fidelity, proxy={"lr": 0.001}, probe={}
    )
    jobs = [api.claim(), api.claim()]
    probe = next(j for j in jobs if j and j["kind"] == "probe")
    assert probe["proxy"]["steps"] == 60
