"""Multi-fidelity searches through the REST API on SQLite and PostgreSQL: rungs are leases with
their own steps, promotions continue a schedule, the baseline climbs with them, the best trial is a
top-rung one, the confirmation re-runs top-rung schedules, and bad fidelities are 422s."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ranktune.search.schedule import RankSchedule
from tests.service.api import Api, spec

FIDELITY = {"min_steps": 20, "max_steps": 180, "eta": 3}  # rungs 20, 60, 180
PROXY = {"lr": 0.001, "batch_size": 32, "seed": 0}  # no steps: the rungs set them


def score(schedule: dict[str, Any], steps: int) -> float:
    """Likes rank on the language tower, more so the longer it trains."""
    parsed = RankSchedule.from_json(schedule)
    language = sum(r for s, r in zip(parsed.sites, parsed.ranks, strict=True) if s.tower == "language")
    return round(0.3 + (steps / 180) * language / (10 * sum(parsed.ranks)), 6)


def drain(api: Api) -> list[dict[str, Any]]:
    """Claim and complete until nothing is left; the jobs in claim order."""
    jobs = []
    while (job := api.claim()) is not None:
        jobs.append(job)
        assert api.complete(job, score(job["schedule"], job["proxy"]["steps"])).status_code == 200
    return jobs


@pytest.mark.parametrize("strategy", ["random", "perfmodel"])
def test_rungs_are_leases_and_the_best_third_goes_up(api: Api, strategy: str) -> None:
    search = api.submit(strategy=strategy, max_trials=22, parallelism=2, fidelity=FIDELITY, proxy=PROXY,
                        performance_model={"min_trials": 6})  # fmt: skip
    jobs = drain(api)
    assert len(jobs) == 22
    trials = {t["number"]: t for t in api.trials(search["id"], schedules=True)}
    assert {j["proxy"]["steps"] for j in jobs} <= {20, 60, 180}
    for job in jobs:  # a lease carries its rung's steps
        trial = trials[job["trial_number"]]
        assert job["proxy"]["steps"] == trial["steps"] == (20, 60, 180)[trial["rung"]]
    rungs = Counter(t["rung"] for t in trials.values())
    assert rungs[0] > rungs[1] > 0 and rungs[2] >= 1, rungs
    assert {t["rung"] for t in trials.values() if 0 in (t["config"], t["number"])} == set(rungs)
    for t in trials.values():
        if t["rung"] > 0:  # the same schedule and seed as the trial it continues
            source = trials[t["config"]]
            assert (t["schedule"], t["proxy_seed"]) == (source["schedule"], source["proxy_seed"])
    found = api.search(search["id"])
    assert found["state"] == "finished"
    best = trials[next(t["number"] for t in trials.values() if t["id"] == found["best_trial_id"])]
    assert best["rung"] == 2  # the best trial is a top-rung one, not the best short run


def test_the_confirmation_reruns_top_rung_schedules(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=14, parallelism=1, fidelity=FIDELITY, proxy=PROXY,
                        confirm={"top_k": 1, "seeds": 1, "steps": 180})  # fmt: skip
    jobs = drain(api)
    confirms = [j for j in jobs if j["kind"] == "confirm"]
    assert len(confirms) == 2 and all(j["proxy"]["steps"] == 180 for j in confirms)
    trials = {t["number"]: t for t in api.trials(search["id"])}
    rerun = trials[next(t["confirms"] for t in trials.values() if t["kind"] == "confirm" and t["confirms"])]
    assert rerun["rung"] == max(t["rung"] for t in trials.values() if t["kind"] == "proxy")


def test_a_search_without_fidelity_keeps_one_length(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=4, parallelism=2, proxy={"steps": 40})
    assert {j["proxy"]["steps"] for j in drain(api)} == {40}
    assert {(t["rung"], t["config"], t["steps"]) for t in api.trials(search["id"])} == {(0, None, None)}


@pytest.mark.parametrize(
    ("fidelity", "proxy", "field"),
    [
        ({"min_steps": 100, "max_steps": 50}, None, "fidelity.max_steps"),
        ({"min_steps": 0, "max_steps": 50}, None, "fidelity.min_steps"),
        ({"min_steps": 10, "max_steps": 50, "eta": 1}, None, "fidelity.eta"),
        ({"min_steps": 10, "max_steps": 50, "rungs": 3}, None, "fidelity.rungs"),
        ({"min_steps": 10, "max_steps": 50}, {"steps": 30}, "proxy.steps"),
    ],
)
def test_bad_fidelities_are_422s_naming_the_field(
    api: Api, fidelity: dict[str, Any], proxy: dict[str, Any] | None, field: str
) -> None:
    response = api.post("/searches", spec(fidelity=fidelity, proxy=proxy or PROXY))
    assert response.status_code == 422, response.text
    named = {".".join(map(str, e["loc"][1:])) for e in response.json()["detail"]}  # by place or message
    assert field in named or any(f"{field}: " in e["msg"] for e in response.json()["detail"]), response.text
    assert api.get("/searches").json()["searches"] == []  # nothing half-written


def test_cascade_brings_rungs_around_the_proxy_and_the_probe(api: Api) -> None:
    # 24: the probe, its 3 allocations and up to 6 screening shapes come before most promotions
    search = api.submit(strategy="cascade", max_trials=24, parallelism=2, proxy={**PROXY, "steps": 30},
                        performance_model={"min_trials": 6})  # fmt: skip
    assert search["spec"]["fidelity"] == {"min_steps": 10, "max_steps": 90, "eta": 3, "resume": True}
    jobs = drain(api)
    assert [j["kind"] for j in jobs].count("probe") == 1
    probe = next(j for j in jobs if j["kind"] == "probe")
    assert probe["trial_number"] == 1 and probe["proxy"]["steps"] == 30  # the second rung's length
    trials = api.trials(search["id"])
    assert {t["steps"] for t in trials if t["kind"] == "proxy"} <= {10, 30, 90}
    assert max(t["rung"] for t in trials) == 2 and api.search(search["id"])["state"] == "finished"
