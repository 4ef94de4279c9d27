"""JSONL VQA through the real processors of every supported vision-language family (issue 18).

Each family is a tiny model directory written by ``tests.tiny_models`` (random weights, a tokenizer
trained here, the real processor classes). Images come in two sizes, so the per-example layouts
differ inside a batch: Qwen2-VL's flat patches per image, LLaVA-NeXT's tiles, Idefics3's crops.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from typer.testing import CliRunner

from ranktune.search.sites import SiteHeuristicWarning
from ranktune.trainer.errors import TaskError
from ranktune.trainer.sites import discover_sites
from ranktune.trainer.tasks.jsonl_vqa import JsonlProcessorVQATask
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_models import VLM_DIRS, WIDE_IMAGES, save_llava, write_vqa_data

FAMILIES = sorted(VLM_DIRS)
WIDE = WIDE_IMAGES  # of the 4 val examples, those 56 px wide (28 px tall); the others are 28 x 28


def image_tokens(family: str, wide: bool) -> int:
    """How many image tokens the processor must put in the text for one 28 px tall image."""
    return {
        "llava": 16,  # (28 / 7)^2, CLS dropped
        "llava_next": 52 if wide else 36,  # 16 base + 4x8 (4x4) tile patches + one newline per patch row
        "idefics3": 4 * (2 + 1 if wide else 4 + 1),  # crops (1x2 or 2x2) and the global view, 4 tokens each
        "smolvlm": 4 * (2 + 1 if wide else 4 + 1),  # Idefics3's image splitting
        "qwen2_vl": 8 if wide else 4,  # 4x8 (4x4) patches of 7 px, merged 2x2
        "qwen2_5_vl": 8 if wide else 4,
        "paligemma": 16,
    }[family]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vqa_data(tmp_path_factory.mktemp("vqa"))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    torch.manual_seed(0)
    name: str = request.param
    return name, VLM_DIRS[name](tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def task(family: tuple[str, Path], data: Path) -> JsonlProcessorVQATask:
    loaded = load_task(str(data), str(family[1]))
    assert isinstance(loaded, JsonlProcessorVQATask)
    return loaded


def test_sites_of_every_family_are_known_not_guessed(family: tuple[str, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteHeuristicWarning)
        sites = discover_sites(str(family[1]))
    assert {s.tower for s in sites} == {"vision", "projector", "language"}


def test_images_tokens_and_answer_only_labels(family: tuple[str, Path], task: JsonlProcessorVQATask) -> None:
    name, _ = family
    records = task.splits["val"]  # 4 examples, the 2nd and 4th wide
    batch = task.encode(records)
    tokenizer = task.processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(task.processor.image_token)
    counts = (batch["input_ids"] == image_id).sum(dim=1).tolist()
    assert counts == [image_tokens(name, i in WIDE) for i in range(4)]
    for row, record in enumerate(records):
        labelled = [t for t in batch["labels"][row].tolist() if t != -100]
        assert tokenizer.decode(labelled).strip() == f"{record.data['answer']}{tokenizer.eos_token}"
        first = int((batch["labels"][row] != -100).nonzero()[0, 0])
        assert batch["attention_mask"][row, first:][: len(labelled)].all()
        assert (
            batch["labels"][row, first : first + len(labelled)]
            == batch["input_ids"][row, first:][: len(labelled)]
        ).all()
    pixels = batch["pixel_values"]
    if name.startswith("qwen"):
        assert batch["image_grid_thw"].tolist() == [[1, 4, 8] if i in WIDE else [1, 4, 4] for i in range(4)]
        assert pixels.shape == (16 + 32 + 16 + 32, 3 * 2 * 7 * 7)
    elif name in ("idefics3", "smolvlm"):
        assert pixels.shape == (4, 5, 3, 28, 28)
        crops = batch["pixel_attention_mask"].flatten(2).any(dim=2).sum(dim=1).tolist()
        assert crops == [3 if i in WIDE else 5 for i in range(4)]
    elif name == "llava_next":
        assert pixels.shape == (4, 3, 3, 28, 28)
        assert batch["image_sizes"].tolist() == [[28, 56] if i in WIDE else [28, 28] for i in range(4)]
    else:
        assert pixels.shape == (4, 3, 28, 28)
    if name == "paligemma":  # the answer (and EOS) is the suffix: causal, and the only part labelled
        assert ((batch["token_type_ids"] == 1) == (batch["labels"] != -100)).all()
    # every example cut out of the batch is what the processor makes of it alone
    for row, record in enumerate(records):
        alone = task.encode([record])
        if name.startswith("qwen"):
            offsets = [0, *np.cumsum([16 + 16 * (i in WIDE) for i in range(4)])]
            assert torch.equal(pixels[offsets[row] : offsets[row + 1]], alone["pixel_values"])
        else:
            assert torch.equal(pixels[row, : len(alone["pixel_values"][0])], alone["pixel_values"][0])
        width = alone["input_ids"].shape[1]
        for key in ("input_ids", "labels"):
            assert torch.equal(batch[key][row, :width], alone[key][0])


def test_answer_tokens_cannot_change_the_logits_that_predict_them(
    family: tuple[str, Path], task: JsonlProcessorVQATask
) -> None:
    """Causal masking over the answer: a model that could see it would score answers it cannot
    generate (PaliGemma without ``suffix`` attended over the whole text both ways)."""
    name, _ = family
    model = task.build_model().eval()
    batch = task.encode(task.splits["val"])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    answer = batch["labels"] != -100
    first = answer.int().argmax(dim=1)
    before = torch.arange(answer.shape[1]) < first.unsqueeze(1)  # positions < k: they predict the answer
    a, b = (
        task.processor.tokenizer.convert_tokens_to_ids(t)
        for t in task.processor.tokenizer.tokenize(" one two")[-2:]
    )
    changed = dict(
        inputs,
        input_ids=torch.where(answer, torch.where(inputs["input_ids"] == a, b, a), inputs["input_ids"]),
    )
    with torch.no_grad():
        logits = model(**inputs).logits
        perturbed = model(**changed).logits
        assert torch.allclose(logits[before], perturbed[before], atol=1e-5)
        assert not torch.allclose(logits[answer], perturbed[answer], atol=1e-3)
        if name == "paligemma":  # the test would catch the leak: an all-prefix text sees the answer
            leaky = {k: torch.zeros_like(v) if k == "token_type_ids" else v for k, v in inputs.items()}
            leaky_changed = dict(leaky, input_ids=changed["input_ids"])
            assert not torch.allclose(
                model(**leaky).logits[before], model(**leaky_changed).logits[before], atol=1e-5
            )


runner = CliRunner()


@pytest.mark.parametrize("method", ["lora", "dmlora"])
def test_plan_train_and_reload_with_peft(
    family: tuple[str, Path], task: JsonlProcessorVQATask, data: Path, tmp_path: Path, method: str
) -> None:
    from peft import PeftModel

    from ranktune.service.cli import app

    _, model_dir = family
    plan = runner.invoke(app, ["plan", "--model", str(model_dir), "--budget-rank", "4", "--grid", "0,2,4,8",
                               "--strategy", "random", "--format", "json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    (tmp_path / "plan.json").write_text(plan.stdout)
    planned = {site["name"]: site["rank"] for site in json.loads(plan.stdout)["sites"] if site["rank"]}
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--model", str(model_dir), "--task", str(data), "--schedule",
                                 str(tmp_path / "plan.json"), "--method", method, "--steps", "2",
                                 "--batch-size", "4", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "ranktune_result.json").read_text())
    assert report["steps_done"] == 2 and report["examples"] == 4
    base = task.build_model()
    loaded = PeftModel.from_pretrained(task.build_model(), str(out))
    ranks = {n: m.r["default"] for n, m in loaded.base_model.model.named_modules() if hasattr(m, "lora_A")}
    if method == "lora":
        assert ranks == planned
    else:  # DMLoRA exports the branches it kept: at most the planned rank
        assert ranks.keys() == planned.keys() and all(ranks[n] <= planned[n] for n in ranks)
    batch = task.encode(task.splits["val"])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        tuned, plain = loaded(**inputs).logits, base(**inputs).logits
    assert torch.isfinite(tuned).all() and not torch.allclose(tuned, plain)


# ---- processors that fail ------------------------------------------------------------------------


def broken_processor(path: Path) -> Path:
    """A LLaVA directory whose tokenizer file is not JSON: its processor cannot load."""
    model = save_llava(path)
    (model / "tokenizer.json").write_text("{ not json")
    return model


def test_a_processor_that_cannot_load_is_one_line_naming_the_model(data: Path, tmp_path: Path) -> None:
    from ranktune.service.cli import app

    model = broken_processor(tmp_path / "broken")
    with pytest.raises(
        TaskError, match=r"^model: .*broken has no usable processor .*JSONDecodeError"
    ) as caught:
        load_task(str(data), str(model))
    assert caught.value.field == "model" and "\n" not in str(caught.value)
    args = ["--uniform-rank", "2", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, ["train", "--model", str(model), "--task", str(data), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model:" in lines[0] and "JSONDecodeError" in lines[0], result.stderr


def test_a_processor_that_cannot_encode_the_data_is_a_model_error(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = VLM_DIRS["llava"](tmp_path / "llava")

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ValueError("Mismatch in `image` token count\nbetween text and input_ids")

    monkeypatch.setattr(transformers.LlavaProcessor, "__call__", refuse)
    with pytest.raises(TaskError, match=r"^model: the processor of .* cannot encode .*Mismatch") as caught:
        load_task(str(data), str(model_dir))  # at load time, before any training
    assert caught.value.field == "model" and "\n" not in str(caught.value)
