"""The search engine through the REST API, on SQLite and PostgreSQL: perfmodel screening and its
reported fit, pruning from heartbeats, dynamic re-allocation, confirmation and its result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ranktune.search.confirm import RECHECK_SEED_OFFSET
from ranktune.search.paired import encode_outcomes
from ranktune.search.schedule import RankSchedule
from ranktune.service.api_client import planned_trials
from tests.service.api import Api, spec


def run_trial(api: Api, accuracy: float) -> dict[str, Any]:
    job = api.claim()
    assert job is not None
    response = api.complete(job, accuracy)
    assert response.status_code == 200, response.text
    return job


def score(schedule: dict[str, Any]) -> float:
    """A made-up objective that likes rank on the language tower: the model has something to learn."""
    parsed = RankSchedule.from_json(schedule)
    language = sum(r for s, r in zip(parsed.sites, parsed.ranks, strict=True) if s.tower == "language")
    return round(0.3 + language / (10 * sum(parsed.ranks)), 6)


def test_perfmodel_takes_over_after_min_trials_and_reports_its_fit(api: Api) -> None:
    search = api.submit(
        strategy="perfmodel", max_trials=12, parallelism=1, performance_model={"min_trials": 6}
    )
    for _ in range(12):
        job = api.claim()
        assert job is not None
        assert api.complete(job, score(job["schedule"])).status_code == 200
    trials = api.trials(search["id"])
    assert [t["predicted"] is None for t in trials] == [True] * 6 + [False] * 6
    found = api.search(search["id"])
    assert found["state"] == "finished"
    model = found["performance_model"]
    assert model["trials"] == 11  # the last refit saw trials 0-10
    assert model["spearman"] is not None and model["mae"] is not None
    assert [p["trial_number"] for p in model["points"]] == list(range(11))
    actual = {t["number"]: t["objective"] for t in trials}
    assert all(p["actual"] == pytest.approx(actual[p["trial_number"]]) for p in model["points"])
    assert found["best_objective"] == max(actual.values())


def test_median_pruner_stops_a_lagging_trial_and_records_it(api: Api) -> None:
    search = api.submit(
        strategy="random", max_trials=4, parallelism=1, pruner={"kind": "median", "startup_trials": 2}
    )
    for accuracy in (0.6, 0.7):
        job = api.claim()
        assert job is not None
        curve = [{"step": 50, "metric": accuracy - 0.1}, {"step": 100, "metric": accuracy}]
        assert api.heartbeat(job, step=100, measurements=curve).json()["action"] == "continue"
        assert api.complete(job, accuracy).status_code == 200
    job = api.claim()
    assert job is not None
    # Optuna's median pruner compares the trial's best value so far with the others' median per step.
    ahead = api.heartbeat(job, step=50, measurements=[{"step": 50, "metric": 0.56}]).json()
    assert ahead["action"] == "continue"  # the median at step 50 is 0.55
    behind = api.heartbeat(job, step=100, measurements=[{"step": 100, "metric": 0.1}]).json()
    assert behind["action"] == "stop" and "pruned at step 100" in behind["reason"]
    trial = next(t for t in api.trials(search["id"]) if t["id"] == job["trial_id"])
    assert trial["state"] == "pruned" and trial["objective"] == pytest.approx(0.1)  # its last value
    assert api.fail(job, "stopped by server", retryable=False).status_code == 409  # the worker's report
    assert api.search(search["id"])["trials"]["queued"] == 1  # its slot went to the next trial


def test_without_a_pruner_a_lagging_trial_goes_on(api: Api) -> None:
    api.submit(strategy="random", max_trials=4, parallelism=1)
    for accuracy in (0.6, 0.7, 0.8):
        job = api.claim()
        assert job is not None
        api.heartbeat(job, step=100, measurements=[{"step": 100, "metric": accuracy}])
        api.complete(job, accuracy)
    job = api.claim()
    assert job is not None
    answer = api.heartbeat(job, step=100, measurements=[{"step": 100, "metric": 0.0}]).json()
    assert answer["action"] == "continue"


def test_dynamic_mode_reallocates_within_budget_and_keeps_a_timeline(api: Api) -> None:
    search = api.submit(strategy="random", max_trials=2, parallelism=1, dynamic={"at": [0.25, 0.5]})
    job = api.claim()
    assert job is not None
    assert job["dynamic"] == {"at": [0.25, 0.5]} and job["kind"] == "proxy"
    schedule = RankSchedule.from_json(job["schedule"])
    language = [
        s.name for s, r in zip(schedule.sites, schedule.ranks, strict=True) if r and s.tower == "language"
    ]
    stats = {
        s.name: {"delta_norm": 10.0 if s.name in language else 0.1, "rank": float(r)}
        for s, r in zip(schedule.sites, schedule.ranks, strict=True)
        if r
    }
    answer = api.heartbeat(job, step=50, site_stats=stats).json()
    assert answer["action"] == "resize", answer
    resized = RankSchedule.from_json(answer["schedule"])
    assert search["budget_params"] * 0.97 <= resized.parameter_count <= search["budget_params"]

    def language_share(s: RankSchedule) -> float:
        mass = sum(
            r * x.params_per_rank for x, r in zip(s.sites, s.ranks, strict=True) if x.tower == "language"
        )
        return mass / s.parameter_count

    assert language_share(resized) > language_share(schedule)
    assert api.heartbeat(job, step=100, site_stats=stats).json()["action"] == "resize"
    assert api.heartbeat(job, step=150, site_stats=stats).json()["action"] == "continue"  # only 2 points
    assert api.complete(job, 0.5).status_code == 200
    trial = next(t for t in api.trials(search["id"]) if t["id"] == job["trial_id"])
    assert [e["step"] for e in trial["timeline"]] == [50, 100]
    assert all(e["source"] == "dynamic" and e["reason"] for e in trial["timeline"])


def test_confirmation_reruns_the_best_and_uniform_and_names_the_winner(api: Api) -> None:
    search = api.submit(
        strategy="random",
        max_trials=5,
        parallelism=2,
        confirm={"top_k": 2, "steps": 700, "seeds": 2, "recheck": 0},
    )
    proxies = {}
    for accuracy in (0.50, 0.60, 0.80, 0.70, 0.55):
        job = run_trial(api, accuracy)
        proxies[job["trial_number"]] = accuracy
    assert api.search(search["id"])["state"] == "running"
    confirm_jobs = []
    while (job := api.claim()) is not None:
        assert job["kind"] == "confirm" and job["proxy"]["steps"] == 700 and job["eval_split"] == "test"
        confirm_jobs.append(job)
        trial = next(t for t in api.trials(search["id"]) if t["id"] == job["trial_id"])
        # trial 2 (0.80) confirms best; uniform a bit worse; trial 3 (0.70) worst
        value = {0: 0.60, 2: 0.66, 3: 0.58}[trial["confirms"]] + 0.01 * job["proxy"]["seed"] % 0.02
        assert api.complete(job, value).status_code == 200
    assert len(confirm_jobs) == 6  # (uniform + top 2) x 2 seeds
    found = api.search(search["id"])
    assert found["state"] == "finished"
    result = found["result"]
    assert result["winner"]["trial_number"] == 2 and result["winner"]["seeds"] == 2
    assert result["uniform"]["trial_number"] == 0
    assert result["gain"] == pytest.approx(result["winner"]["mean"] - result["uniform"]["mean"])
    assert sorted(c["trial_number"] for c in result["confirmed"]) == [0, 2, 3]
    assert found["best_objective"] == pytest.approx(result["winner"]["mean"])
    best = api.get(f"/searches/{search['id']}/best").json()
    assert best["trial"]["number"] == 2
    export = api.get(f"/searches/{search['id']}/export/peft").json()
    assert export["trial_number"] == 2


def test_rechecks_rerun_the_best_proxies_and_the_confirmation_ranks_by_their_means(api: Api) -> None:
    search = api.submit(
        strategy="random",
        max_trials=4,
        parallelism=2,
        confirm={"top_k": 1, "steps": 700, "seeds": 1, "recheck": 2},
    )
    proxies = {}
    for accuracy in (0.50, 0.80, 0.78, 0.60):
        job = run_trial(api, accuracy)
        proxies[job["trial_number"]] = (accuracy, job)
    rechecks = [api.claim("r0"), api.claim("r1")]
    assert api.claim("r2") is None, "the confirmation waits for the rechecks"
    again = {}
    for job in rechecks:
        assert job is not None and job["kind"] == "proxy" and job["eval_split"] == "val"
        assert job["trial_number"] in (4, 5)
        original = next(n for n, (_, p) in proxies.items() if p["schedule"] == job["schedule"])
        assert original in (1, 2), "the two best proxies are re-run"
        assert job["proxy"]["seed"] == proxies[original][1]["proxy"]["seed"] + RECHECK_SEED_OFFSET
        again[original] = job
    # Trial 1 (0.80) was lucky: its second run scores 0.70 (mean 0.75); trial 2's 0.79 (mean 0.785).
    assert api.complete(again[1], 0.70).status_code == 200
    assert api.search(search["id"])["trials"]["queued"] == 0, "no confirmation before the last recheck"
    assert api.complete(again[2], 0.79).status_code == 200
    confirms = [api.claim("c0"), api.claim("c1")]
    assert all(job is not None and job["kind"] == "confirm" for job in confirms)
    assert {t["confirms"] for t in api.trials(search["id"]) if t["kind"] == "confirm"} == {0, 2}
    for job in confirms:
        assert job is not None and api.complete(job, 0.7).status_code == 200
    found = api.search(search["id"])
    assert found["state"] == "finished"
    # The CLI's progress bar counts proxies, rechecks and the most confirmation runs there can be.
    assert planned_trials(found) == len(api.trials(search["id"])) == 4 + 2 + 2
    assert planned_trials({**found, "spec": {**found["spec"], "confirm": {"top_k": 1, "seeds": 1}}}) == 6


def test_confirmation_with_outcomes_reports_the_paired_interval(api: Api) -> None:
    search = api.submit(
        strategy="random",
        max_trials=3,
        parallelism=1,
        confirm={"top_k": 1, "steps": 50, "seeds": 2, "recheck": 0},
    )
    for accuracy in (0.5, 0.9, 0.6):
        run_trial(api, accuracy)
    rng = np.random.default_rng(0)
    difficulty = rng.random(3000)
    uniform: dict[int, np.ndarray] = {}  # per seed: what uniform gets right
    while (job := api.claim()) is not None:
        trial = next(t for t in api.trials(search["id"]) if t["id"] == job["trial_id"])
        right = uniform.setdefault(job["proxy"]["seed"], rng.random(3000) > difficulty * 0.6)
        if trial["confirms"] != 0:  # the confirmed schedule: right where uniform is, and on ~2.5% more
            right = right | (rng.random(3000) < 0.08)
        response = api.complete(job, float(right.mean()), outcomes=encode_outcomes(right))
        assert response.status_code == 200, response.text
    found = api.search(search["id"])
    paired = found["result"]["paired"]
    assert found["result"]["winner"]["trial_number"] == 1
    assert paired["method"] == "seeds x examples" and (paired["seeds"], paired["examples"]) == (2, 3000)
    assert paired["gain"] == pytest.approx(found["result"]["gain"])
    assert 0 < paired["ci"][0] < paired["gain"] < paired["ci"][1] and paired["verdict"] == "significant gain"
    best = api.get(f"/searches/{search['id']}/best").json()
    assert best["confirmation"].startswith("trial 1: gain +") and "95% CI" in best["confirmation"]
    assert best["confirmation"].endswith("paired over 2 seeds x 3,000 examples): significant gain")
    assert "outcomes" not in best["trial"]  # kept for the statistics, not sent with every trial


@pytest.mark.parametrize("outcomes", ["3000:AA==", "not-outcomes", "0:", 5])
def test_unreadable_outcomes_are_a_422_naming_the_field(api: Api, outcomes: Any) -> None:
    api.submit()
    job = api.claim()
    assert job is not None
    response = api.complete(job, 0.5, outcomes=outcomes)
    assert response.status_code == 422 and "outcomes" in response.text
    assert api.complete(job, 0.5).status_code == 200  # nothing was half-written


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pruner", {"kind": "hyperband"}),
        ("dynamic", {"at": [0.5, 0.2]}),
        ("dynamic", {"at": [1.0]}),
        ("confirm", {"top_k": 0}),
        ("performance_model", {"acquisition": "pi"}),
        ("performance_model", {"min_trials": 1}),
    ],
)
def test_engine_settings_are_validated(api: Api, field: str, value: Any) -> None:
    response = api.post("/searches", spec(**{field: value}))
    assert response.status_code == 422
    assert field in response.text
