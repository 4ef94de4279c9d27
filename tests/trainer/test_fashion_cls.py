"""builtin:fashion-cls on small IDX files: the tiny VLM's pretrained tower as a standalone CLIP vision
model with a new head, the VLM's own pixels through its image processor, the whole test file as the
test split, a plan that names the modules training adapts, and an adapter PEFT reloads exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPVisionModel

from ranktune.search.schedule import RankSchedule
from ranktune.service.planning import make_plan
from ranktune.trainer.adapters import AdapterMethod
from ranktune.trainer.adapters.export import save_peft_adapter
from ranktune.trainer.builtin.fashion_mnist import CLASSES, DIR_ENV, load_fashion_test_file
from ranktune.trainer.builtin.tiny_vision import MARKER_FILE, tiny_vision_dir
from ranktune.trainer.errors import TaskError
from ranktune.trainer.fingerprint import base_weights_sha256
from ranktune.trainer.proxy import ProxySettings, proxy_finetune
from ranktune.trainer.sites import sites_of_model
from ranktune.trainer.tasks.fashion_cls import FashionClsTask
from ranktune.trainer.tasks.image_classification import with_new_head
from ranktune.trainer.tasks.registry import BUILTIN_TASKS, load_task
from tests.trainer.test_fashion_vqa import write_fashion
from tests.trainer.test_image_classification import HEAD, reload


@pytest.fixture
def small_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "idx").mkdir()
    write_fashion(tmp_path / "idx")
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "idx"))
    return tmp_path / "idx"


@pytest.fixture(scope="module")
def tower_dir(pretrained_tiny_vlm_dir: Path) -> Path:
    return tiny_vision_dir()


def test_the_tower_is_the_tiny_vlms_own(pretrained_tiny_vlm_dir: Path, tower_dir: Path) -> None:
    from ranktune.trainer.builtin.pretrain import load_saved_tiny_vlm

    vlm = load_saved_tiny_vlm(pretrained_tiny_vlm_dir)
    tower = CLIPVisionModel.from_pretrained(tower_dir)
    expected = vlm.model.vision_tower.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in tower.state_dict().items())
    assert json.loads((tower_dir / MARKER_FILE).read_text())["model"] == "builtin:tiny-vlm-vision"
    assert tiny_vision_dir() == tower_dir and base_weights_sha256("builtin:tiny-vlm-vision")


def test_splits_pixels_and_labels(small_fashion: Path, tower_dir: Path) -> None:
    task = load_task("builtin:fashion-cls", BUILTIN_TASKS["builtin:fashion-cls"])
    assert isinstance(task, FashionClsTask) and task.label_names == CLASSES
    assert [task.split_size(s) for s in ("train", "val", "test")] == [60, 10, 20]  # test: the whole file
    test = load_fashion_test_file()
    batch = next(task.batches("test", 32, seed=0))
    assert torch.equal(batch["labels"], torch.tensor(test.labels))
    assert torch.allclose(batch["pixel_values"], torch.tensor(test.images), atol=1e-6)  # the VLM's pixels
    assert task.data_sha256() == FashionClsTask().data_sha256()


def test_a_plan_trains_and_reloads_into_the_tower_with_its_head(
    small_fashion: Path, tower_dir: Path, tmp_path: Path
) -> None:
    plan = make_plan("builtin:tiny-vlm-vision", budget_rank=4, strategy="random", seed=1)
    task = FashionClsTask()
    model = task.build_model()
    assert type(model).__name__ == "CLIPVisionModel" and sites_of_model(model) == plan.space.sites
    assert {n for n, p in model.named_parameters() if p.requires_grad} == HEAD
    assert len(plan.space.sites) == 24 and all(s.tower == "vision" for s in plan.space.sites)
    settings = ProxySettings(steps=4, batch_size=8)
    result = proxy_finetune(task, plan.schedule, AdapterMethod("dmlora"), settings, eval_split="test")
    assert result.trainable_params == plan.schedule.parameter_count + 96 * 10 + 10  # the head, apart
    trained = result.model
    assert trained is not None and result.examples == 20
    out = save_peft_adapter(trained, plan.schedule, tmp_path / "adapter", heads=task.saved_heads)
    loaded = reload(out, with_new_head(CLIPVisionModel.from_pretrained(tower_dir), 10))
    batch = next(task.batches("test", 20, seed=0))
    with torch.no_grad():
        assert torch.allclose(task.logits(loaded, batch), task.logits(trained, batch), atol=1e-5)
    assert torch.equal(task.evaluate_outcomes(trained, "test"), task.evaluate_outcomes(trained, "test"))
    assert np.array_equal(task.evaluate_outcomes(loaded, "test").numpy(), result.outcomes)


def test_lora_on_every_site_trains_the_head_apart(small_fashion: Path, tower_dir: Path) -> None:
    task = FashionClsTask()
    sites = make_plan("builtin:tiny-vlm-vision", budget_rank=8).space.sites
    settings = ProxySettings(steps=2, batch_size=8)
    result = proxy_finetune(task, RankSchedule.uniform(sites, 8), settings=settings)
    assert result.adapter_params == 43_008 and result.trainable_params == 43_008 + 970
    assert 0.0 <= result.metric <= 1.0 and result.examples == 10


def test_other_models_are_errors_on_model() -> None:
    for model in ("builtin:tiny-vlm", "builtin:minilm"):
        with pytest.raises(TaskError, match="use --model builtin:tiny-vlm-vision") as caught:
            load_task("builtin:fashion-cls", model)
        assert caught.value.field == "model"
    with pytest.raises(TaskError, match="choose one of") as caught:
        load_task("builtin:fashion-cls", "builtin:nothing")
    assert caught.value.field == "model"


def test_without_the_debian_package_the_error_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    task = load_task("builtin:fashion-cls", "builtin:tiny-vlm-vision")  # nothing is read yet
    with pytest.raises(TaskError, match=f"apt-get install dataset-fashion-mnist, or set {DIR_ENV}"):
        task.split_size("train")
