"""One model class from plan to reload: planning, training and the exported adapter all use the class
the model's directory names, so a plan trains as planned and the adapter (with a classifier's own
head in ``modules_to_save``) loads into that class with every weight matched."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers as T
from safetensors.torch import load_file
from typer.testing import CliRunner

from ranktune.search.schedule import RankSchedule
from ranktune.service.cli import app
from ranktune.trainer.adapters.export import save_peft_adapter
from ranktune.trainer.proxy import ProxySettings, proxy_finetune
from ranktune.trainer.sites import discover_sites, sites_of_model
from ranktune.trainer.tasks.jsonl import JsonlClassificationTask
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_text_models import save_bert_classifier, save_causal_lm, write_dataset

runner = CliRunner()
TOPICS = {
    "sports": ["the striker scored", "our team won the cup"],
    "food": ["the chef baked bread", "soup is hot"],
}
ROWS = [{"text": t, "label": label} for _ in range(3) for label, texts in TOPICS.items() for t in texts]


def classification_task(tmp_path: Path, model: Path) -> JsonlClassificationTask:
    task = load_task(str(write_dataset(tmp_path / "topics", ROWS)), str(model))
    assert isinstance(task, JsonlClassificationTask)
    return task


def reload(adapter: Path, base: torch.nn.Module) -> torch.nn.Module:
    """The adapter in PEFT, checked to load with no missing and no unexpected key."""
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(base, str(adapter))
    keys = loaded.load_adapter(str(adapter), adapter_name="check")
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    loaded.set_adapter("default")
    return loaded


def test_a_bert_classifier_plan_trains_and_reloads_with_its_head(tmp_path: Path) -> None:
    model_dir = save_bert_classifier(tmp_path / "bert", labels=["food", "sports"])
    plan = runner.invoke(app, ["plan", "--model", str(model_dir), "--budget-rank", "4", "--grid", "0,2,4,8",
                               "--strategy", "random", "--format", "json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    schedule = json.loads(plan.stdout)
    assert all(site["name"].startswith("bert.encoder.layer.") for site in schedule["sites"])
    (tmp_path / "plan.json").write_text(plan.stdout)
    data, out = write_dataset(tmp_path / "topics", ROWS), tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--model", str(model_dir), "--task", str(data), "--schedule",
                                 str(tmp_path / "plan.json"), "--steps", "3", "--batch-size", "4",
                                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "adapter_config.json").read_text())["modules_to_save"] == ["classifier"]
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(weights)
    loaded = reload(out, T.AutoModelForSequenceClassification.from_pretrained(model_dir))
    ranks = {n.removeprefix("base_model.model."): m.r["default"]
             for n, m in loaded.named_modules() if hasattr(m, "lora_A")}  # fmt: skip
    assert ranks == {site["name"]: site["rank"] for site in schedule["sites"] if site["rank"]}
    report = json.loads((out / "ranktune_result.json").read_text())
    task = classification_task(tmp_path, model_dir)
    assert task.evaluate(loaded) == pytest.approx(report["metric"])


def test_the_checkpoint_head_is_kept_in_its_label_order(tmp_path: Path) -> None:
    model_dir = save_bert_classifier(tmp_path / "bert", labels=["sports", "food"])
    task = classification_task(tmp_path, model_dir)
    assert task.label_names == ("sports", "food")  # the checkpoint's order, not sorted
    assert task.head_modules == task.saved_heads == ("classifier",) and task.own_head
    model = task.build_model()
    checkpoint = T.BertForSequenceClassification.from_pretrained(model_dir)
    assert torch.equal(model.classifier.weight, checkpoint.classifier.weight)  # not a new head
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }
    assert sites_of_model(model) == discover_sites(str(model_dir))


def test_a_head_of_another_size_is_resized_and_reloads(tmp_path: Path) -> None:
    model_dir = save_bert_classifier(tmp_path / "bert", num_labels=3)
    task = classification_task(tmp_path, model_dir)
    assert task.label_names == ("food", "sports")
    sites = discover_sites(str(model_dir))
    result = proxy_finetune(
        task, RankSchedule.uniform(sites, 2), settings=ProxySettings(steps=3, batch_size=4)
    )
    trained = result.model
    assert trained is not None and trained.classifier.out_features == 2
    assert trained.config.id2label == {0: "food", 1: "sports"}
    out = save_peft_adapter(
        trained, RankSchedule.uniform(sites, 2), tmp_path / "adapter", heads=task.saved_heads
    )
    base = T.BertForSequenceClassification.from_pretrained(
        model_dir, num_labels=2, ignore_mismatched_sizes=True
    )
    loaded = reload(out, base)
    batch = {k: v for k, v in next(task.batches("val", 4, seed=0)).items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, trained(**batch).logits, atol=1e-5)


def test_a_causal_lm_classifies_through_its_base_model(tmp_path: Path) -> None:
    model_dir = save_causal_lm(tmp_path / "qwen2", "qwen2")
    task = classification_task(tmp_path, model_dir)
    assert not task.own_head and task.saved_heads == () and task.head_modules == ("classifier",)
    model = task.build_model()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert sites_of_model(model) == discover_sites(str(model_dir))  # model.layers…, as planned
    assert math.isfinite(task.loss(model, next(task.batches("train", 4, seed=0))).item())
