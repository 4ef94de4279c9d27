"""JSONL tasks on real files written here: PNG images, JSONL lines and saved model directories."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from ranktune.trainer.builtin.mnist import load_digits
from ranktune.trainer.builtin.pretrain import is_tiny_vlm_dir
from ranktune.trainer.builtin.tiny_vlm import (
    DIGIT_WORDS,
    EOS_ID,
    IMAGE_ID,
    VOCABULARY,
    tiny_vlm_config,
    tiny_vlm_tokenizer,
)
from ranktune.trainer.errors import TaskError
from ranktune.trainer.models import minilm_dir
from ranktune.trainer.tasks.jsonl import JsonlClassificationTask, read_dataset
from ranktune.trainer.tasks.jsonl_vqa import JsonlProcessorVQATask, JsonlTinyVQATask
from ranktune.trainer.tasks.registry import load_task

TOPICS = {
    "sports": ["the striker scored", "our team won the cup"],
    "food": ["the chef baked bread", "soup is hot"],
}


def write_jsonl(path: Path, rows: list[dict[str, object]] | list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def vqa_rows(root: Path, count: int, start: int = 0) -> list[dict[str, object]]:
    """``count`` MNIST test digits saved as PNGs under ``root/img`` with "which digit" questions."""
    digits = load_digits("test")
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for i in range(start, start + count):
        name = f"img/{i}.png"
        Image.fromarray((digits.images[i, 0] * 255).round().astype(np.uint8)).save(root / name)
        rows.append(
            {"image": name, "question": "Which digit is this?", "answer": DIGIT_WORDS[digits.labels[i]]}
        )
    return rows


@pytest.fixture
def vqa_dir(tmp_path: Path) -> Path:
    root = tmp_path / "digits"
    write_jsonl(root / "train.jsonl", vqa_rows(root, 24))
    write_jsonl(root / "val.jsonl", vqa_rows(root, 8, start=24))
    return root


@pytest.fixture
def saved_tiny_vlm(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "my-tiny-vlm"
    T.LlavaForConditionalGeneration(tiny_vlm_config()).save_pretrained(path)
    tiny_vlm_tokenizer().save_pretrained(path)
    return path


@pytest.fixture
def llava_with_processor(tmp_path: Path) -> Path:
    """A LLaVA of another shape (RGB, its own processor) that must take the AutoProcessor path."""
    torch.manual_seed(0)
    path = tmp_path / "other-llava"
    vision = T.CLIPVisionConfig(
        hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        image_size=28, patch_size=7, num_channels=3,
    )  # fmt: skip
    text = T.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)  # fmt: skip
    config = T.LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_ID,
                           vision_feature_layer=-1, vision_feature_select_strategy="default")  # fmt: skip
    T.LlavaForConditionalGeneration(config).save_pretrained(path)
    tokenizer = tiny_vlm_tokenizer()
    tokenizer.add_tokens(["banana"])  # a vocabulary of its own: not the built-in tiny VLM's
    image_processor = T.CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    processor = T.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=7,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    processor.save_pretrained(path)
    return path


@pytest.fixture
def tiny_bert(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny-bert"
    tokenizer = T.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    config = T.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)  # fmt: skip
    T.BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def classification_rows(repeat: int) -> list[dict[str, object]]:
    return [
        {"text": t, "label": label} for _ in range(repeat) for label, texts in TOPICS.items() for t in texts
    ]


# ---- VQA ----------------------------------------------------------------------------------------


def test_vqa_directory_with_the_builtin_tiny_vlm(vqa_dir: Path, pretrained_tiny_vlm_dir: Path) -> None:
    task = load_task(str(vqa_dir), "builtin:tiny-vlm")
    assert isinstance(task, JsonlTinyVQATask)
    assert [task.split_size(s) for s in ("train", "val", "test")] == [24, 8, 8]  # no test.jsonl: val
    batch = next(task.batches("val", 8, seed=0))
    digits = load_digits("test")
    assert torch.allclose(
        batch["pixel_values"][:, 0], torch.from_numpy(digits.images[24:32, 0]), atol=1 / 255
    )
    answers = [[VOCABULARY[t] for t in row.tolist() if t != -100] for row in batch["labels"]]
    assert answers == [[DIGIT_WORDS[d], "<eos>"] for d in digits.labels[24:32]]
    question = [VOCABULARY[t] for t in batch["input_ids"][0, 17:22].tolist()]
    assert question == ["which", "digit", "is", "this", "?"]  # lower-cased, "?" split off
    model = task.build_model()
    assert not any(p.requires_grad for p in model.parameters())
    assert math.isfinite(task.loss(model, batch).item())
    assert 0.0 <= task.evaluate(model, "test") <= 1.0


def test_vqa_with_a_saved_tiny_vlm_directory(vqa_dir: Path, saved_tiny_vlm: Path, tmp_path: Path) -> None:
    assert is_tiny_vlm_dir(saved_tiny_vlm)
    rows = vqa_rows(tmp_path / "abs", 3)
    rgb = tmp_path / "big-rgb.png"  # any size and colour is read as grayscale 28x28
    Image.fromarray(np.full((50, 40, 3), 200, dtype=np.uint8)).save(rgb)
    rows[0]["image"] = str(rgb)  # absolute path
    write_jsonl(vqa_dir / "test.jsonl", rows)
    task = load_task(str(vqa_dir), str(saved_tiny_vlm))
    assert isinstance(task, JsonlTinyVQATask) and task.split_size("test") == 3
    pixels = next(task.batches("test", 3, seed=0))["pixel_values"]
    assert pixels.shape == (3, 1, 28, 28) and torch.allclose(pixels[0], torch.full((1, 28, 28), 200 / 255))
    model = task.build_model()
    reference = T.LlavaForConditionalGeneration.from_pretrained(saved_tiny_vlm)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))  # fmt: skip


def test_vqa_with_another_llava_through_its_processor(vqa_dir: Path, llava_with_processor: Path) -> None:
    task = load_task(str(vqa_dir), str(llava_with_processor))
    assert isinstance(task, JsonlProcessorVQATask)
    batch = next(task.batches("train", 4, seed=0))
    assert batch["pixel_values"].shape == (4, 3, 28, 28)
    for row in range(4):
        labelled = [t for t in batch["labels"][row].tolist() if t != -100]
        assert labelled[-1] == EOS_ID and VOCABULARY[labelled[0]] in DIGIT_WORDS and len(labelled) == 2
        assert (batch["input_ids"][row] == IMAGE_ID).sum() == 16  # the processor expanded <image>
    model = task.build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert math.isfinite(task.loss(model, batch).item())
    assert 0.0 <= task.evaluate(model, "val", batch_size=3) <= 1.0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_single_file_is_split_80_10_10_deterministically(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "all.jsonl", classification_rows(10))  # 40 lines
    splits = read_dataset(path)
    lines = {s: [r.line for r in records] for s, records in splits.items()}
    assert [len(lines[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    assert sorted(lines["train"] + lines["val"] + lines["test"]) == list(range(1, 41))
    assert {s: [r.line for r in rs] for s, rs in read_dataset(path).items()} == lines


# ---- classification -----------------------------------------------------------------------------


def test_classification_with_a_local_encoder_directory(tmp_path: Path, tiny_bert: Path) -> None:
    data = tmp_path / "topics"
    write_jsonl(data / "train.jsonl", classification_rows(4))
    write_jsonl(data / "val.jsonl", classification_rows(1))
    task = load_task(str(data), str(tiny_bert))
    assert isinstance(task, JsonlClassificationTask)
    assert task.label_names == ("food", "sports") and task.head_modules == ("classifier",)
    texts, labels = task.examples("val")
    assert labels == [1, 1, 0, 0] and texts[0] == "the striker scored"
    model = task.build_model()
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }
    optimizer = torch.optim.AdamW(model.classifier.parameters(), lr=1e-2)
    model.train()
    stream = task.batches("train", 8, seed=0)
    for _ in range(3):
        loss = task.loss(model, next(stream))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert math.isfinite(loss.item())
    assert 0.0 <= task.evaluate(model, "val") <= 1.0 and model.training


def test_classification_with_the_builtin_minilm(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "one-file.jsonl", classification_rows(3))
    task = load_task(str(path), "builtin:minilm")
    model = task.build_model()
    assert math.isfinite(task.loss(model, next(task.batches("train", 4, seed=0))).item())


# ---- malformed input ----------------------------------------------------------------------------

GOOD = {"image": "img/0.png", "question": "which digit is this ?", "answer": "seven"}


@pytest.mark.parametrize(
    ("train_lines", "expected"),
    [
        ([GOOD, GOOD, '{"image": "img/0.png", "question": '], r"train\.jsonl, line 3: not valid JSON"),
        (
            [GOOD, {"image": "img/0.png", "question": "which ?"}],
            r"train\.jsonl, line 2: missing key 'answer'",
        ),
        ([GOOD, "", "[1, 2]"], r"train\.jsonl, line 3: expected a JSON object"),
        (
            [GOOD, {**GOOD, "image": "img/missing.png"}],
            r"train\.jsonl, line 2: image 'img/missing.png' not found",
        ),
        ([GOOD, {**GOOD, "answer": "banana"}], r"train\.jsonl, line 2: key 'answer': the word 'banana'"),
        ([GOOD, {**GOOD, "answer": 7}], r"train\.jsonl, line 2: key 'answer' must be a non-empty string"),
        ([{"picture": "x.png"}], r"train\.jsonl, line 1: cannot tell the kind of data"),
        ([GOOD, {**GOOD, "image": "img/broken.png"}], r"train\.jsonl, line 2: cannot read image"),
    ],
)
def test_malformed_vqa_lines_are_named(tmp_path: Path, train_lines: list, expected: str) -> None:
    root = tmp_path / "bad"
    write_jsonl(root / "val.jsonl", vqa_rows(root, 1))
    (root / "img" / "broken.png").write_bytes(b"not a png")
    write_jsonl(root / "train.jsonl", train_lines)
    with pytest.raises(TaskError, match=expected) as caught:
        load_task(str(root), "builtin:tiny-vlm")
    assert caught.value.field == "task"


def test_malformed_classification_lines_are_named(tmp_path: Path) -> None:
    data = tmp_path / "cls"
    write_jsonl(data / "val.jsonl", classification_rows(1))
    write_jsonl(data / "train.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": 3}])
    with pytest.raises(
        TaskError, match=r"train\.jsonl, line 2: key 'label' must be a non-empty string, got 3"
    ):
        load_task(str(data), "builtin:minilm")
    write_jsonl(data / "train.jsonl", [{"text": "a", "label": "x"}])
    write_jsonl(data / "val.jsonl", [{"text": "a", "label": "x"}, {"label": "y"}])
    with pytest.raises(TaskError, match=r"val\.jsonl, line 2: missing key 'text'"):
        load_task(str(data), "builtin:minilm")


def test_data_set_layout_errors(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "only-train" / "train.jsonl", classification_rows(3))
    with pytest.raises(TaskError, match=r"lacks val.jsonl"):
        load_task(str(tmp_path / "only-train"), "builtin:minilm")
    short = write_jsonl(tmp_path / "short.jsonl", classification_rows(1))
    with pytest.raises(TaskError, match=r"has 4 examples.*at least 10"):
        load_task(str(short), "builtin:minilm")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TaskError, match=r"neither a .jsonl file"):
        load_task(str(tmp_path / "notes.txt"), "builtin:minilm")


def test_data_that_does_not_suit_the_model_names_the_model(
    tmp_path: Path, vqa_dir: Path, llava_with_processor: Path
) -> None:
    with pytest.raises(TaskError, match=r"is a text model but .* holds VQA records") as caught:
        load_task(str(vqa_dir), "builtin:minilm")
    assert caught.value.field == "model"
    text_data = write_jsonl(tmp_path / "t.jsonl", classification_rows(3))
    with pytest.raises(TaskError, match=r"is a vision-language model but .* classification") as caught:
        load_task(str(text_data), "builtin:tiny-vlm")
    assert caught.value.field == "model"
    (llava_with_processor / "processor_config.json").unlink()
    with pytest.raises(TaskError, match="without a saved processor") as caught:
        load_task(str(vqa_dir), str(llava_with_processor))
    assert caught.value.field == "model"
