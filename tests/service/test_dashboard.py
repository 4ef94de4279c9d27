"""The dashboard: a static shell and assets (no token, no data, no network) and the REST calls the
page makes, on a search seeded through the worker endpoints exactly as real workers would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ranktune.service.api.routes.dashboard import ASSETS, OWN_ASSETS, PLOTLY_JS, plotly_js_path
from ranktune.service.app import create_app
from ranktune.service.db.repository.tokens import create_token
from tests.service.api import Api, make_settings
from tests.service.databases import SqliteDatabases

MALICIOUS = "<script>alert(1)</script>"
SHELL_SCRIPTS = ["util.js", "plots.js", "detail.js", "app.js"]
# The accuracy each proxy trial reports; trial 3 fails instead (a non-retryable error).
ACCURACY = {0: 0.50, 1: 0.55, 2: 0.62, 4: 0.47, 5: 0.70}
FAILED_NUMBER = 3
FAIL_REASON = "CUDA out of memory <b>at step 7</b>"


def curve(accuracy: float) -> list[dict[str, float]]:
    return [
        {"step": 0, "loss": 2.3},
        {"step": 50, "loss": 1.4, "metric": round(accuracy - 0.1, 4)},
        {"step": 100, "loss": 0.9, "metric": accuracy},
    ]


def seed_finished_search(user: Api, worker: Api, workers: tuple[str, ...] = ("gpu-0", "gpu-1")) -> int:
    """Submit a random search of 6 trials and run every trial it hands out to the end (confirmation
    runs included, if the server schedules any): 5 succeed with distinct accuracies, 1 fails."""
    search = user.submit(name="rank search", strategy="random", max_trials=6, parallelism=6, max_attempts=1)
    for turn in range(100):
        job = worker.claim(workers[turn % len(workers)])
        if job is None:
            break
        assert job["search_id"] == search["id"]
        number = job["trial_number"]
        if number == FAILED_NUMBER:
            answer = worker.fail(job, reason=FAIL_REASON, retryable=False)
        else:
            accuracy = ACCURACY.get(number, round(0.6 + 0.01 * (number % 7), 4))
            answer = worker.complete(
                job, accuracy=accuracy, curve=curve(accuracy), wall_time_s=1.5 + number, device="cuda:0"
            )
        assert answer.status_code == 200, answer.text
    final = user.search(search["id"])
    assert final["state"] == "finished", final
    search_id: int = search["id"]
    return search_id


def submit_malicious(user: Api) -> int:
    search_id: int = user.submit(name=MALICIOUS, max_trials=2, parallelism=1)["id"]
    return search_id


@pytest.fixture
def static_api(sqlite_dbs: SqliteDatabases) -> Iterator[Api]:
    """For what needs no data: one SQLite database, not one per backend."""
    with sqlite_dbs.fresh() as url, TestClient(create_app(make_settings(url))) as client:
        yield Api(client)


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    with app.state.sessions() as session:
        return {role: create_token(session, f"{role}-token", role)[1] for role in ("admin", "user", "worker")}


@pytest.fixture
def seeded(api: Api, tokens: dict[str, str]) -> tuple[Api, Api, int]:
    user, worker = api.with_token(tokens["user"]), api.with_token(tokens["worker"])
    return user, worker, seed_finished_search(user, worker)


def test_shell_needs_no_token_and_carries_no_data(seeded: tuple[Api, Api, int]) -> None:
    user, _, _ = seeded
    submit_malicious(user)
    anonymous = user.with_token(None)
    assert anonymous.get("/searches").status_code == 401, "the data needs a token"
    shell = anonymous.request("GET", "/")
    assert shell.status_code == 200
    assert shell.headers["content-type"] == "text/html; charset=utf-8"
    csp = shell.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert shell.headers["x-content-type-options"] == "nosniff"
    html = shell.text
    assert "rank search" not in html and "alert(1)" not in html and "gpu-0" not in html
    assert html == (ASSETS / "index.html").read_text(), "the shell is the static file, nothing rendered in"
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts == ["dashboard/static/plotly.min.js"] + [f"dashboard/static/{n}" for n in SHELL_SCRIPTS]
    assert "<script>" not in html, "no inline script: the CSP forbids it"


@pytest.mark.parametrize("name", sorted(OWN_ASSETS))
def test_own_assets_are_served_with_their_types(static_api: Api, name: str) -> None:
    response = static_api.request("GET", f"/dashboard/static/{name}")
    assert response.status_code == 200
    expected = "text/css" if name.endswith(".css") else "text/javascript"
    assert response.headers["content-type"] == f"{expected}; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == (ASSETS / name).read_bytes()


def test_everything_the_shell_references_is_served_locally(static_api: Api) -> None:
    html = static_api.request("GET", "/").text
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
        assert not re.match(r"^(?:[a-z]+:)?//", ref), f"{ref} would leave the server"
        if ref.startswith("data:"):
            continue  # inline (the empty favicon)
        assert static_api.request("GET", "/" + ref).status_code == 200, ref
    for name in OWN_ASSETS:
        text = (ASSETS / name).read_text()
        assert not re.search(r"https?://|//cdn|@import", text), f"{name} refers to the network"


def test_plotly_comes_from_the_installed_package(static_api: Api) -> None:
    path = plotly_js_path()
    assert path is not None and path.parent.name == "package_data"
    response = static_api.request("GET", f"/dashboard/static/{PLOTLY_JS}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "max-age" in response.headers["cache-control"]
    assert response.content == Path(path).read_bytes()
    assert b"plotly.js v" in response.content[:200]


@pytest.mark.parametrize("name", ["nope.js", "index.html", "__init__.py", "app.js%00", "app.js.map"])
def test_unknown_assets_are_404_naming_the_file(static_api: Api, name: str) -> None:
    response = static_api.request("GET", f"/dashboard/static/{name}")
    assert response.status_code == 404
    assert response.json()["detail"][0]["loc"] == ["path", "name"]


TRAVERSALS = ["..%2F..%2Fapp.py", "../../api/routes/dashboard.py", "%2Fetc%2Fpasswd", "..", "%2E%2E"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_never_reach_the_disk(static_api: Api, path: str) -> None:
    response = static_api.request("GET", f"/dashboard/static/{path}")
    assert response.status_code == 404
    assert b"import" not in response.content and b"root:" not in response.content


HTML_SINKS = ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function")


def test_scripts_never_parse_data_as_html() -> None:
    for name in OWN_ASSETS:
        text = (ASSETS / name).read_text()
        for sink in HTML_SINKS:
            assert sink not in text, f"{name} uses {sink}"


def page_calls(search_id: int, trial_number: int) -> list[str]:
    """Every GET the page makes (util.js prefixes them with api/v1)."""
    trials = f"/searches/{search_id}/trials"
    return [
        "/searches?limit=200",
        f"/searches/{search_id}",
        f"{trials}?limit=10000",
        f"{trials}?limit=1",
        f"{trials}?include_schedule=true&limit=1&offset={trial_number}",
        f"{trials}?include_schedule=true&limit=10000",
        f"/searches/{search_id}/best",
        f"/searches/{search_id}/export/peft",
        "/workers",
    ]


def test_the_page_calls_work_for_a_user_and_refuse_a_worker(seeded: tuple[Api, Api, int]) -> None:
    user, worker, search_id = seeded
    for path in page_calls(search_id, 2):
        assert user.get(path).status_code == 200, path
        assert worker.get(path).status_code == 403, path
        refused = user.with_token(None).get(path)
        assert refused.status_code == 401, path
        assert refused.json()["detail"][0]["loc"] == ["header", "Authorization"], "the sign-in form shows msg"


def test_the_answers_have_what_the_page_reads(seeded: tuple[Api, Api, int]) -> None:
    user, _, search_id = seeded
    listed = user.get("/searches?limit=200").json()["searches"]
    assert [s["id"] for s in listed] == [search_id]
    search = listed[0]
    read = {"id", "name", "state", "trials", "max_trials", "best_trial_id", "created_at", "reason", "spec"}
    assert read <= set(search)
    assert search["spec"]["objective"] == {"metric": "accuracy", "direction": "maximize"}
    counts = search["trials"]
    assert counts["failed"] == 1 and counts["succeeded"] >= 5 and counts["running"] == 0
    trials = user.trials(search_id)
    assert all(t["schedule"] is None for t in trials), "the polled list stays small"
    by_number = {t["number"]: t for t in trials}
    assert by_number[0]["objective"] == ACCURACY[0], "trial 0 is the uniform baseline the gain is measured on"
    assert by_number[FAILED_NUMBER]["state"] == "failed" and by_number[FAILED_NUMBER]["reason"] == FAIL_REASON
    done = by_number[5]
    stored = [{k: v for k, v in point.items() if v is not None} for point in done["curve"]]
    assert stored == curve(ACCURACY[5]) and done["worker_name"] in ("gpu-0", "gpu-1")
    for key in ("kind", "attempt", "max_attempts", "parameter_count", "started_at", "finished_at"):
        assert done[key] is not None, key
    best = user.get(f"/searches/{search_id}/best").json()["trial"]
    if best["kind"] == "proxy":
        assert best["objective"] == max(ACCURACY.values())


SITE_KEYS = {"name", "tower", "layer", "kind", "in_features", "out_features", "rank"}


def test_one_trial_with_its_schedule_by_offset(seeded: tuple[Api, Api, int]) -> None:
    """The heatmap fetches one schedule with offset = trial number: numbers are dense from 0."""
    user, _, search_id = seeded
    for trial in user.trials(search_id):
        path = f"/searches/{search_id}/trials?include_schedule=true&limit=1&offset={trial['number']}"
        [one] = user.get(path).json()["trials"]
        assert one["id"] == trial["id"] and one["number"] == trial["number"]
        sites = one["schedule"]["sites"]
        assert sites and set(sites[0]) >= SITE_KEYS
        assert one["schedule"]["parameter_count"] == sum(
            s["rank"] * (s["in_features"] + s["out_features"]) for s in sites
        )


def test_the_peft_download_is_a_lora_config(seeded: tuple[Api, Api, int]) -> None:
    user, _, search_id = seeded
    exported: dict[str, Any] = user.get(f"/searches/{search_id}/export/peft").json()
    assert exported["search_id"] == search_id
    assert {"rank_pattern", "target_modules"} <= set(exported["peft_config"])


def test_names_come_back_verbatim_for_the_page_to_escape(api: Api, tokens: dict[str, str]) -> None:
    user, worker = api.with_token(tokens["user"]), api.with_token(tokens["worker"])
    search_id = submit_malicious(user)
    assert worker.claim(MALICIOUS) is not None
    assert user.search(search_id)["name"] == MALICIOUS
    assert user.get("/workers").json()["workers"][0]["name"] == MALICIOUS
