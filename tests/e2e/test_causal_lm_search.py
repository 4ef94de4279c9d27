"""A search over a tiny causal LM on instruction data, end to end: a real server, a worker in this
process, the task's default objective (``eval_loss``, minimized), and paired confirmation on float
per-example outcomes. Bad instruction data and unsuitable models are 422s naming the field."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ranktune.service.app import create_app
from ranktune.trainer.worker.loop import Worker, WorkerOptions
from tests.service.api import make_settings, spec
from tests.service.databases import migrate
from tests.service.server import LiveServer
from tests.tiny_text_models import colour_rows, save_causal_lm, write_dataset

PROXY = {"steps": 4, "lr": 0.01, "batch_size": 6, "seed": 0, "eval_every": 2}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'lm.db'}"
    migrate(url)
    with LiveServer(create_app(make_settings(url, reap_interval_s=0.5, heartbeat_interval_s=0.5))) as live:
        yield live


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Qwen2 directory and a conversation data set for it."""
    root = tmp_path_factory.mktemp("lm")
    return save_causal_lm(root / "qwen2", "qwen2"), write_dataset(root / "chat", colour_rows("chat"))


def lm_spec(model: Path, task: Path, **overrides: object) -> dict[str, object]:
    body = spec(model=str(model), task=str(task), strategy="random", max_trials=2, parallelism=1,
                budget={"rank": 2}, space={"grid": [0, 2, 4]}, proxy=PROXY, **overrides)  # fmt: skip
    body.pop("objective")  # the task's default
    return body


@pytest.mark.slow
def test_a_search_minimizes_eval_loss_and_confirms_paired(
    server: LiveServer, lm: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = lm
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        body = lm_spec(model, data, confirm={"top_k": 1, "steps": 4, "seeds": 2, "recheck": 0})
        response = client.post("/searches", json=body)
        assert response.status_code == 201, response.text
        search = response.json()
        assert search["spec"]["objective"] == {"metric": "eval_loss", "direction": "minimize"}
        worker = Worker(WorkerOptions(server=server.url, name="lm-worker", device="cpu",
                                      spool_dir=tmp_path / "spool", max_poll_s=0.2))  # fmt: skip
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while client.get(f"/searches/{search['id']}").json()["state"] == "running":
            assert time.monotonic() < deadline and thread.is_alive(), "the search did not finish"
            time.sleep(0.2)
        worker.preempted = True  # idle now: stops at its next poll
        thread.join(timeout=30)
        finished = client.get(f"/searches/{search['id']}").json()
        trials = client.get(f"/searches/{search['id']}/trials").json()["trials"]
        best = client.get(f"/searches/{search['id']}/best").json()
    assert finished["state"] == "finished", finished
    assert len(trials) == 6 and {t["state"] for t in trials} == {"succeeded"}  # 2 proxy + 2 x 2 confirm
    for trial in trials:
        metrics = trial["metrics"]
        assert set(metrics) == {"eval_loss", "eval_loss_se", "exact_match"}
        assert trial["objective"] == metrics["eval_loss"] > 0 and 0.0 <= metrics["exact_match"] <= 1.0
    proxy = [t for t in trials if t["kind"] == "proxy"]
    assert all([p["step"] for p in t["curve"]] == [2, 4] for t in proxy)
    assert best["objective"] == {"metric": "eval_loss", "direction": "minimize"}
    paired = finished["result"]["paired"] or next(c["paired"] for c in finished["result"]["confirmed"]
                                                  if c["paired"])  # fmt: skip
    assert paired["method"] == "seeds x examples" and paired["examples"] == 6 and paired["seeds"] == 2


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"objective": {"metric": "accuracy"}}, "objective.metric", "reports eval_loss (minimize)"),
        ({"model": "builtin:minilm"}, "model", "is a BertModel, not a causal language model"),
        ({"task": "bad"}, "task", "line 2: key 'completion' must be a non-empty string"),
    ],
)
def test_unsuitable_lm_searches_are_422s_naming_the_field(
    server: LiveServer, lm: tuple[Path, Path], tmp_path: Path, change: dict, field: str, message: str
) -> None:
    model, data = lm
    if change.get("task") == "bad":
        rows = [{"prompt": "hello", "completion": " blue"}, {"prompt": "hello", "completion": ""}]
        change = {"task": str(write_dataset(tmp_path / "bad", rows))}
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        response = client.post("/searches", json={**lm_spec(model, data), **change})
        [detail] = response.json()["detail"]
    assert response.status_code == 422 and ".".join(detail["loc"][1:]) == field and message in detail["msg"]


def test_a_metric_without_a_direction_takes_the_tasks(server: LiveServer, lm: tuple[Path, Path]) -> None:
    model, data = lm
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        response = client.post(
            "/searches", json={**lm_spec(model, data), "objective": {"metric": "exact_match"}}
        )
        assert response.status_code == 201, response.text
        client.post(f"/searches/{response.json()['id']}/cancel")
    assert response.json()["spec"]["objective"] == {"metric": "exact_match", "direction": "maximize"}
