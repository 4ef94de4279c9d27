"""Searches over REST, on SQLite and PostgreSQL: submit, read, trials, cancel, finish, best, export."""

from __future__ import annotations

from typing import Any

import pytest

from ranktune.search.schedule import RankSchedule
from tests.service.api import SPEC, Api


def run_to_the_end(api: Api, score: Any = lambda job: 0.5) -> list[dict[str, Any]]:
    """Claim and complete until nothing is left; returns the jobs in claim order."""
    jobs = []
    while (job := api.claim()) is not None:
        assert api.complete(job, accuracy=score(job)).status_code == 200
        jobs.append(job)
    return jobs


def test_submit_tiny_vlm_search(api: Api) -> None:
    search = api.submit()
    assert search["state"] == "running"
    assert search["model"] == "builtin:tiny-vlm" and search["task"] == "builtin:digits-vqa"
    assert search["site_count"] == 54 and search["budget_rank"] == 8
    assert search["trials"]["queued"] == SPEC["parallelism"]
    defaults = {
        "grad_accum_steps": 1,
        "gradient_checkpointing": False,
        "max_seq_len": None,
        "precision": "auto",
    }
    assert search["spec"]["proxy"] == {**SPEC["proxy"], **defaults} and search["spec"]["lease_ttl_s"] == 120
    trials = api.trials(search["id"], schedules=True)
    assert [t["number"] for t in trials] == [0, 1, 2, 3]
    schedules = [RankSchedule.from_json(t["schedule"]) for t in trials]
    assert set(schedules[0].ranks) == {8}, "trial 0 is the uniform baseline"
    assert len(set(schedules[1].ranks)) > 1, "random trials differ from uniform"
    for schedule, trial in zip(schedules, trials, strict=True):
        assert 0.97 * search["budget_params"] <= schedule.parameter_count <= search["budget_params"]
        assert trial["parameter_count"] == schedule.parameter_count
        assert trial["proxy_seed"] == 0, "random strategy: every trial trains with the search seed"
    assert trials[0]["schedule"] is not None and api.trials(search["id"])[0]["schedule"] is None


def test_defaults_fill_everything_but_name_model_task(api: Api) -> None:
    body = {"name": "minimal", "model": "builtin:tiny-vlm", "task": "builtin:digits-vqa"}
    response = api.post("/searches", body)
    assert response.status_code == 201, response.text
    search = response.json()
    assert search["spec"]["budget"] == {"rank": 8, "params": None}
    assert search["spec"]["strategy"] == "perfmodel" and search["spec"]["lease_ttl_s"] == 60.0
    assert search["spec"]["pruner"]["kind"] == "none" and search["spec"]["confirm"] is None
    assert search["spec"]["dynamic"] is None and search["spec"]["performance_model"]["min_trials"] == 8
    assert search["spec"]["space"]["towers"] is None and search["trials"]["queued"] == 4


def test_uniform_strategy_varies_only_the_seed(api: Api) -> None:
    search = api.submit(strategy="uniform", parallelism=3, proxy={**SPEC["proxy"], "seed": 7})
    trials = api.trials(search["id"], schedules=True)
    assert [t["proxy_seed"] for t in trials] == [7, 8, 9]
    assert len({str(t["schedule"]) for t in trials}) == 1


def test_list_and_get(api: Api) -> None:
    first = api.submit(name="one")
    second = api.submit(name="two", budget={"params": 60_000})
    listed = api.get("/searches").json()["searches"]
    assert [s["name"] for s in listed] == ["two", "one"]
    assert api.search(first["id"])["name"] == "one"
    assert second["budget_params"] == 60_000 and second["budget_rank"] is None
    assert api.get("/searches?state=finished").json()["searches"] == []
    missing = api.get("/searches/999")
    assert missing.status_code == 404 and missing.json()["detail"][0]["loc"] == ["path", "search_id"]


def test_search_finishes_with_the_best_trial_and_exports_peft(api: Api) -> None:
    from peft import LoraConfig

    search = api.submit(max_trials=5, parallelism=2)
    scores = {0: 0.5, 1: 0.9, 2: 0.7, 3: 0.9, 4: 0.1}  # tie between 1 and 3: the earlier wins
    jobs = run_to_the_end(api, lambda job: scores[job["trial_number"]])
    assert sorted(j["trial_number"] for j in jobs) == [0, 1, 2, 3, 4]
    done = api.search(search["id"])
    assert done["state"] == "finished" and done["finished_at"] is not None
    assert done["trials"]["succeeded"] == 5
    best = api.get(f"/searches/{search['id']}/best").json()
    assert best["trial"]["number"] == 1 and best["trial"]["objective"] == 0.9
    assert done["best_trial_id"] == best["trial"]["id"]
    export = api.get(f"/searches/{search['id']}/export/peft").json()
    assert export["trial_number"] == 1
    config = dict(export["peft_config"])
    assert config.pop("peft_type") == "LORA"
    lora = LoraConfig(**config)
    schedule = RankSchedule.from_json(best["trial"]["schedule"])
    assert set(lora.target_modules) == {site.name for site, _ in schedule.active()}
    assert sorted(lora.rank_pattern.values()) == sorted(rank for _, rank in schedule.active())


def test_minimize_picks_the_lowest(api: Api) -> None:
    search = api.submit(
        max_trials=3, parallelism=3, objective={"metric": "accuracy", "direction": "minimize"}
    )
    run_to_the_end(api, lambda job: [0.4, 0.2, 0.3][job["trial_number"]])
    assert api.get(f"/searches/{search['id']}/best").json()["trial"]["number"] == 1


def test_best_before_any_success_is_404(api: Api) -> None:
    search = api.submit()
    for path in ("best", "export/peft"):
        response = api.get(f"/searches/{search['id']}/{path}")
        assert response.status_code == 404
        assert response.json()["detail"][0]["loc"] == ["path", "search_id"]


def test_best_while_running_is_the_best_so_far(api: Api) -> None:
    search = api.submit(max_trials=10, parallelism=2)
    job = api.claim()
    assert job is not None and api.complete(job, accuracy=0.3).status_code == 200
    best = api.get(f"/searches/{search['id']}/best").json()
    assert best["search_state"] == "running" and best["trial"]["number"] == job["trial_number"]


def test_top_up_keeps_parallelism_and_max_trials(api: Api) -> None:
    search = api.submit(max_trials=6, parallelism=3)
    seen_active = []
    while (job := api.claim()) is not None:
        counts = api.search(search["id"])["trials"]
        seen_active.append(counts["queued"] + counts["running"])
        assert api.complete(job).status_code == 200
    assert max(seen_active) <= 3
    final = api.search(search["id"])
    assert sum(final["trials"].values()) == 6 and final["state"] == "finished"


def test_cancel_stops_running_and_queued_trials(api: Api) -> None:
    search = api.submit(max_trials=10, parallelism=3)
    job = api.claim()
    assert job is not None
    cancelled = api.post(f"/searches/{search['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["trials"]["cancelled"] == 3
    answer = api.heartbeat(job).json()
    assert answer["action"] == "stop" and answer["schedule"] is None
    assert api.claim() is None, "cancelled trials are never handed out"
    late = api.complete(job)
    assert late.status_code == 409 and late.json()["detail"][0]["loc"] == ["body", "attempt"]
    assert api.post(f"/searches/{search['id']}/cancel").status_code == 200, "cancel is idempotent"


def test_cancel_a_finished_search_is_409(api: Api) -> None:
    search = api.submit(max_trials=1, parallelism=1)
    run_to_the_end(api)
    response = api.post(f"/searches/{search['id']}/cancel")
    assert response.status_code == 409 and response.json()["detail"][0]["loc"] == ["body", "state"]


def test_all_trials_failing_fails_the_search_with_the_most_common_error(api: Api) -> None:
    search = api.submit(max_trials=3, parallelism=3)
    reasons = iter([
        "TaskError: task: data/train.jsonl, line 3: missing key 'answer'\n(details that differ 1)",
        "CUDA out of memory",
        "TaskError: task: data/train.jsonl, line 3: missing key 'answer'\n(details that differ 2)",
    ])  # fmt: skip
    while (job := api.claim()) is not None:
        assert api.fail(job, next(reasons), retryable=False).status_code == 200
    final = api.search(search["id"])
    assert final["state"] == "failed" and final["trials"]["failed"] == 3
    assert final["reason"] == (
        "no trial succeeded; most common error (2 of 3 failed trials): "
        "TaskError: task: data/train.jsonl, line 3: missing key 'answer'"
    )


@pytest.mark.parametrize("path", ["/", "/docs", "/openapi.json"])
def test_pages(api: Api, path: str) -> None:
    assert api.request("GET", path).status_code == 200


def test_every_api_route_declares_a_response_model(api: Api) -> None:
    schema = api.request("GET", "/openapi.json").json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            ok = [c for c in operation["responses"] if c.startswith("2")]
            assert ok, (method, path)
            if path.endswith("/metrics") or ok == ["204"]:
                continue
            content = operation["responses"][ok[0]].get("content", {})
            if list(content) in (["application/zip"], ["application/octet-stream"]):  # bytes a PUT stored
                continue
            assert "$ref" in str(content), f"{method.upper()} {path} has no response model"
