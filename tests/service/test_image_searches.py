"""An image-classification search on a vision transformer directory (a bare CLIP vision tower with a new
head), on SQLite: bad data is a 422 naming ``task``, a mismatched model one naming ``model``; a search
runs its proxies and confirmation in a real worker's ``run_job`` and its winner's adapter carries the
head (``modules_to_save``) and reloads into the tower's class with every key matched."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.service.api import SMALL, Api, spec
from tests.service.databases import row_counts
from tests.tiny_vision_models import save_clip_vision, write_image_data

TINY_VLM = "builtin:tiny-vlm"


def test_bad_images_and_mismatched_models_are_422s(sqlite_api: tuple[Api, str], tmp_path: Path) -> None:
    api, url = sqlite_api
    data, model = write_image_data(tmp_path / "data"), save_clip_vision(tmp_path / "clip")
    (data / "img" / "dog-1.png").write_text("not a picture")
    before = row_counts(url)
    for body, field, words in [
        (spec(model=str(model), task=str(data), **SMALL), "task", "key 'image': cannot open"),
        (spec(model=TINY_VLM, task="builtin:fashion-cls", **SMALL), "model", "builtin:tiny-vlm-vision"),
    ]:
        response = api.post("/searches", body)
        assert response.status_code == 422, response.text
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["body", field] and words in detail["msg"]
    assert row_counts(url) == before


def test_a_search_on_a_clip_vision_tower_runs_confirms_and_exports(
    sqlite_api: tuple[Api, str], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import CLIPVisionModel

    from ranktune.trainer.tasks.image_classification import with_new_head
    from ranktune.trainer.worker.loop import Worker, WorkerOptions

    api, _ = sqlite_api
    data, model = write_image_data(tmp_path / "data"), save_clip_vision(tmp_path / "clip")
    search = api.submit(model=str(model), task=str(data), strategy="random", max_trials=2, parallelism=1,
                        method={"kind": "dmlora"}, confirm={"top_k": 1, "steps": 2, "seeds": 1},
                        **SMALL)  # fmt: skip
    assert search["site_count"] == 12
    worker = Worker(WorkerOptions(server="http://testserver", device="cpu", spool_dir=tmp_path / "spool"))
    assert api.app is not None
    worker.client.http = TestClient(api.app, base_url="http://testserver/api/v1")  # the app, in-process
    jobs: list[dict[str, Any]] = []
    while (job := api.claim()) is not None:
        worker.run_job(job)
        jobs.append(job)
    done = api.search(search["id"])
    assert done["state"] == "finished", done
    assert done["trials"]["succeeded"] == len(jobs) >= 3  # proxies, then uniform and the best confirmed
    archive = api.get(f"/searches/{search['id']}/export/peft/adapter")
    assert archive.status_code == 200
    adapter = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(archive.content)).extractall(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    base = with_new_head(CLIPVisionModel.from_pretrained(model), 3)
    loaded = PeftModel.from_pretrained(base, str(adapter))
    keys = loaded.load_adapter(str(adapter), adapter_name="check")
    assert keys.missing_keys == [] and keys.unexpected_keys == []
