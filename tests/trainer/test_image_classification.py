"""Image classification on vision transformer directories (ViT with its own head, bare CLIP vision and
DINOv2 with a new one): plan → train → a PEFT adapter that reloads into the directory's class with every
key matched and the trained logits; bad data and mismatched models are errors naming file, line and key
or ``model``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from ranktune.search.schedule import RankSchedule
from ranktune.service.cli import app
from ranktune.trainer.adapters import AdapterMethod
from ranktune.trainer.adapters.export import save_peft_adapter
from ranktune.trainer.errors import TaskError
from ranktune.trainer.proxy import ProxySettings, proxy_finetune
from ranktune.trainer.sites import discover_sites, sites_of_model
from ranktune.trainer.tasks.image_classification import JsonlImageClassificationTask, with_new_head
from ranktune.trainer.tasks.jsonl import dataset_kind, read_dataset
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_text_models import save_bert_classifier, write_dataset
from tests.tiny_vision_models import VISION_MODELS, save_clip_vision, save_vit_classifier, write_image_data

runner = CliRunner()
HEAD = {"classifier.weight", "classifier.bias"}


def reload(adapter: Path, base: torch.nn.Module) -> torch.nn.Module:
    """The adapter in PEFT, checked to load with no missing and no unexpected key."""
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(base, str(adapter))
    keys = loaded.load_adapter(str(adapter), adapter_name="check")
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    loaded.set_adapter("default")
    return loaded


def image_task(data: Path, model: Path | str) -> JsonlImageClassificationTask:
    task = load_task(str(data), str(model))
    assert isinstance(task, JsonlImageClassificationTask)
    return task


@pytest.mark.parametrize("family", list(VISION_MODELS))
def test_a_plan_trains_and_its_adapter_reloads_with_the_trained_logits(tmp_path: Path, family: str) -> None:
    model_dir, data = VISION_MODELS[family](tmp_path / family), write_image_data(tmp_path / "data")
    plan = runner.invoke(app, ["plan", "--model", str(model_dir), "--budget-rank", "4", "--grid", "0,2,4,8",
                               "--strategy", "random", "--format", "json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    schedule = RankSchedule.from_json(json.loads(plan.stdout))
    task = image_task(data, model_dir)
    assert task.label_names == ("cat", "dog", "fox")
    assert task.saved_heads == task.head_modules == ("classifier",)
    model = task.build_model()
    assert sites_of_model(model) == discover_sites(str(model_dir)) == schedule.sites  # the head is no site
    assert {n for n, p in model.named_parameters() if p.requires_grad} == HEAD
    method = AdapterMethod("dmlora" if family == "dinov2" else "lora")
    result = proxy_finetune(task, schedule, method, ProxySettings(steps=3, batch_size=4))
    trained = result.model
    assert trained is not None and result.trainable_params == result.adapter_params + 32 * 3 + 3
    out = save_peft_adapter(trained, schedule, tmp_path / "adapter", heads=task.saved_heads)
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    cls = getattr(T, json.loads((model_dir / "config.json").read_text())["architectures"][0])
    base = cls.from_pretrained(model_dir)
    loaded = reload(out, base if task.own_head else with_new_head(base, len(task.label_names)))
    assert task.own_head == (family == "vit")
    batch = next(task.batches("val", 8, seed=0))
    with torch.no_grad():
        assert torch.allclose(task.logits(loaded, batch), task.logits(trained, batch), atol=1e-5)
    assert torch.equal(task.evaluate_outcomes(loaded), torch.from_numpy(result.outcomes))


def test_ranktune_train_writes_the_head_with_the_adapter(tmp_path: Path) -> None:
    model_dir, data = save_clip_vision(tmp_path / "clip"), write_image_data(tmp_path / "data")
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--model", str(model_dir), "--task", str(data), "--uniform-rank",
                                 "2", "--method", "dmlora", "--steps", "2", "--batch-size", "4", "--device",
                                 "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    report = json.loads((out / "ranktune_result.json").read_text())
    assert report["examples"] == 3 and report["metric_name"] == "accuracy"


def test_a_checkpoint_head_of_another_size_is_resized(tmp_path: Path) -> None:
    model_dir = save_vit_classifier(tmp_path / "vit", num_labels=5)
    task = image_task(write_image_data(tmp_path / "data"), model_dir)
    assert task.own_head and task.head_modules == ("classifier",)
    model = task.build_model()
    assert model.classifier.out_features == 3 and model.config.id2label == {0: "cat", 1: "dog", 2: "fox"}
    assert model(pixel_values=next(task.batches("val", 3, seed=0))["pixel_values"]).logits.shape == (3, 3)


def test_image_and_label_records_are_image_classification(tmp_path: Path) -> None:
    assert dataset_kind(read_dataset(write_image_data(tmp_path / "data"))) == "image_classification"


def bad_data(tmp_path: Path, line: str, where: str = "train.jsonl") -> Path:
    data = write_image_data(tmp_path / "data")
    path = data / where
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    return data


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"image": "img/cat-0.png"}', r"train.jsonl, line 3: missing key 'label'"),
        ('{"image": "img/no.png", "label": "cat"}', r"train.jsonl, line 3: key 'image': cannot open .*/no"),
        ('{"image": "train.jsonl", "label": "cat"}', r"train.jsonl, line 3: key 'image': cannot open"),
        ('{"image": "img/cat-0.png", "label": ""}', r"train.jsonl, line 3: key 'label' must be a non-empty"),
    ],
)
def test_bad_records_name_file_line_and_key(tmp_path: Path, line: str, expected: str) -> None:
    data = bad_data(tmp_path, line)
    with pytest.raises(TaskError, match=expected) as caught:
        load_task(str(data), str(save_clip_vision(tmp_path / "clip")))
    assert caught.value.field == "task"


def test_a_single_label_is_refused(tmp_path: Path) -> None:
    data = write_image_data(tmp_path / "data", labels=("cat",))
    expected = r"train.jsonl, line 1: key 'label': every record .* has the label 'cat'"
    with pytest.raises(TaskError, match=expected):
        load_task(str(data), str(save_clip_vision(tmp_path / "clip")))


def test_models_that_do_not_fit_the_data_are_errors_on_model(tmp_path: Path) -> None:
    images = write_image_data(tmp_path / "data")
    bert = save_bert_classifier(tmp_path / "bert")
    clip = save_clip_vision(tmp_path / "clip")
    texts = write_dataset(tmp_path / "texts", [{"text": "a red cat", "label": "cat"}] * 3)
    for data, model, expected in [
        (images, str(bert), "is not a vision transformer"),
        (images, "builtin:tiny-vlm", "is not a vision transformer"),
        (texts, str(clip), r"is a vision transformer, but .* holds text classification \(text, label\)"),
        (texts, "builtin:tiny-vlm-vision", "is a vision transformer"),
    ]:
        with pytest.raises(TaskError, match=expected) as caught:
            load_task(str(data), model)
        assert caught.value.field == "model"
    (clip / "preprocessor_config.json").unlink()
    with pytest.raises(TaskError, match="no saved image processor") as caught:
        load_task(str(images), str(clip))
    assert caught.value.field == "model"


def test_the_cli_exits_2_naming_the_line(tmp_path: Path) -> None:
    data = bad_data(tmp_path, '{"image": "img/none.png", "label": "cat"}')
    model_dir = save_clip_vision(tmp_path / "clip")
    result = runner.invoke(app, ["train", "--model", str(model_dir), "--task", str(data), "--uniform-rank",
                                 "2", "--steps", "1", "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2
    assert "line 3: key 'image'" in " ".join(result.output.split())
