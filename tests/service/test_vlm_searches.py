"""Searches on vision-language model directories with their real processors (issue 18), on SQLite:
a processor that cannot load is a 422 on ``model``; a Qwen2-VL perfmodel search (its processor rebuilt
without its torchvision video processor) runs its proxies and confirmation in a real worker's
``run_job`` and exports a schedule PEFT applies to the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.api import SMALL, Api, spec
from tests.service.databases import row_counts
from tests.tiny_models import VLM_DIRS, save_llava, write_vqa_data


def test_a_model_whose_processor_cannot_load_is_a_422_on_model(
    sqlite_api: tuple[Api, str], tmp_path: Path
) -> None:
    api, url = sqlite_api
    data, model = write_vqa_data(tmp_path / "data"), save_llava(tmp_path / "broken")
    (model / "tokenizer.json").write_text("{ not json")  # its processor cannot load
    before = row_counts(url)
    response = api.post("/searches", spec(model=str(model), task=str(data), **SMALL))
    assert response.status_code == 422, response.text
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "model"] and "no usable processor" in detail["msg"]
    assert row_counts(url) == before


@pytest.mark.parametrize("family", sorted(VLM_DIRS))
def test_a_vlm_search_runs_confirms_and_exports(
    sqlite_api: tuple[Api, str], tmp_path: Path, family: str
) -> None:
    """Every VLM family's real processor and model class through a service search, worker, confirmation
    and PEFT export."""
    from peft import LoraConfig, get_peft_model

    from ranktune.trainer.tasks.registry import load_task
    from ranktune.trainer.worker.loop import Worker, WorkerOptions

    api, _ = sqlite_api
    data, model = write_vqa_data(tmp_path / "data"), VLM_DIRS[family](tmp_path / family)
    search = api.submit(model=str(model), task=str(data), strategy="perfmodel", max_trials=3, parallelism=1,
                        performance_model={"min_trials": 2},
                        confirm={"top_k": 1, "steps": 2, "seeds": 1, "recheck": 0},
                        **SMALL)  # fmt: skip
    assert search["site_count"] > 0
    worker = Worker(WorkerOptions(server="http://testserver", device="cpu", spool_dir=tmp_path / "spool"))
    assert api.app is not None
    worker.client.http = TestClient(api.app, base_url="http://testserver/api/v1")  # the app, in-process
    jobs: list[dict[str, Any]] = []
    while (job := api.claim()) is not None:
        worker.run_job(job)
        jobs.append(job)
    done = api.search(search["id"])
    assert done["state"] == "finished", done
    assert done["trials"]["succeeded"] == len(jobs) == 3 + 2  # proxies, then uniform and the best confirmed
    export = api.get(f"/searches/{search['id']}/export/peft").json()
    config = dict(export["peft_config"])
    config.pop("peft_type")
    task = load_task(str(data), str(model))
    adapted = get_peft_model(task.build_model(), LoraConfig(**config))
    assert sum(p.numel() for p in adapted.parameters() if p.requires_grad) <= done["budget_params"]
