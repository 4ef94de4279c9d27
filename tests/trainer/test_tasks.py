"""The built-in tasks against the ``Task`` contract: data, batches, masking, metric, headroom, registry."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ranktune.trainer.builtin.mnist import pool_indices
from ranktune.trainer.builtin.tiny_vlm import DIGIT_WORDS, EOS_ID, IMAGE_ID, IMAGE_TOKENS, PAD_ID, VOCABULARY
from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks import minilm_topics
from ranktune.trainer.tasks.base import evaluating, tensor_batches
from ranktune.trainer.tasks.digits_vqa import QUESTIONS_PER_IMAGE, DigitsVQATask
from ranktune.trainer.tasks.minilm_topics import LABELS, MiniLMTopicsTask
from ranktune.trainer.tasks.registry import load_task
from ranktune.trainer.tasks.vqa import rows_exactly_right


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tensor_batches_follow_the_contract() -> None:
    rows = {"x": torch.arange(10)}
    train = tensor_batches(rows, "train", 4, seed=3)
    epochs = [torch.cat([next(train)["x"] for _ in range(2)]) for _ in range(3)]  # 2 full batches/epoch
    assert all(len(set(e.tolist())) == 8 for e in epochs) and not torch.equal(epochs[0], epochs[1])
    again = tensor_batches(rows, "train", 4, seed=3)
    assert torch.equal(torch.cat([next(again)["x"] for _ in range(2)]), epochs[0])
    val = [b["x"].tolist() for b in tensor_batches(rows, "val", 4, seed=3)]
    assert val == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(next(tensor_batches(rows, "train", 64, seed=0))["x"]) == 10  # smaller than a batch


def test_evaluating_restores_each_modules_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout())
    model.train()
    model[1].eval()
    with evaluating(model):
        assert not any(m.training for m in model.modules())
        assert not torch.is_grad_enabled()
    assert model.training and model[0].training and not model[1].training


# ---- builtin:digits-vqa -------------------------------------------------------------------------


def test_digits_vqa_images_were_never_pretrained_on(digits_task: DigitsVQATask) -> None:
    pretrain = set(pool_indices("pretrain").tolist())
    for split in ("train", "val", "test"):
        assert not pretrain & set(pool_indices(split).tolist())
    assert not set(pool_indices("train").tolist()) & set(pool_indices("test").tolist())
    assert digits_task.split_size("train") == 1200 * QUESTIONS_PER_IMAGE["train"]
    assert digits_task.split_size("val") == 400 * QUESTIONS_PER_IMAGE["val"]


def test_digits_vqa_questions_are_deterministic_and_correct(digits_task: DigitsVQATask) -> None:
    from ranktune.trainer.builtin.mnist import load_digits

    assert DigitsVQATask().questions("val") == digits_task.questions("val")
    labels = load_digits("val").labels
    for q in digits_task.questions("val")[:200]:
        digit = int(labels[q.image])
        if q.question == "which digit is this ?":
            assert q.answer == DIGIT_WORDS[digit]
        elif "odd or even" in q.question:
            assert q.answer == ("odd" if digit % 2 else "even")
        elif "greater than four" in q.question:
            assert q.answer == ("yes" if digit > 4 else "no")
        elif "after" in q.question:
            assert q.answer == (["one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                                 "ten"][digit])  # fmt: skip
    templates = {q.question for q in digits_task.questions("train")}
    assert len(templates) == 6
    per_image = [[q.question for q in digits_task.questions("train") if q.image == i] for i in range(3)]
    assert all(len(set(qs)) == len(qs) == 4 for qs in per_image)


def test_digits_vqa_sequences_and_label_masking(digits_task: DigitsVQATask) -> None:
    batch = next(digits_task.batches("val", 64, seed=0))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert batch["pixel_values"].shape == (64, 1, 28, 28) and batch["pixel_values"].dtype == torch.float32
    assert (ids[:, :IMAGE_TOKENS] == IMAGE_ID).all() and (ids[:, IMAGE_TOKENS] == 1).all()
    for row, q in zip(range(64), digits_task.questions("val"), strict=False):
        answer = [VOCABULARY.index(w) for w in q.answer.split()] + [EOS_ID]
        labelled = labels[row][labels[row] != -100].tolist()
        assert labelled == answer
        length = int(mask[row].sum())
        assert (ids[row, length:] == PAD_ID).all() and ids[row, length - 1] == EOS_ID
        assert (labels[row, length - len(answer) : length] == ids[row, length - len(answer) : length]).all()
        question = [VOCABULARY[i] for i in ids[row, IMAGE_TOKENS + 1 : length - len(answer)].tolist()]
        assert " ".join(question) == q.question


def test_digits_vqa_batches_are_deterministic(digits_task: DigitsVQATask) -> None:
    def take(seed: int) -> list[torch.Tensor]:
        return [b["input_ids"] for b in itertools.islice(digits_task.batches("train", 32, seed), 200)]

    first, again, other = take(0), take(0), take(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # > one epoch (150 batches)
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    val = list(digits_task.batches("val", 300, seed=5))
    assert [len(b["labels"]) for b in val] == [300, 300, 200]
    assert torch.equal(val[0]["input_ids"], next(digits_task.batches("val", 300, seed=9))["input_ids"])


def test_digits_vqa_model_is_frozen_and_evaluation_changes_nothing(digits_task: DigitsVQATask) -> None:
    model = digits_task.build_model()
    assert not any(p.requires_grad for p in model.parameters()) and digits_task.head_modules == ()
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    model.train()
    before = snapshot(model)
    accuracy = digits_task.evaluate(model, "val")
    assert 0.0 <= accuracy <= 1.0
    assert unchanged(model, before) and model.training
    loss = digits_task.loss(model, next(digits_task.batches("train", 8, seed=0)))
    assert loss.ndim == 0 and math.isfinite(float(loss))


def greedy_answers(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int) -> list[list[int]]:
    """Plain greedy decoding (no cache) from each example's prompt, for comparison with exact match."""
    answers = []
    for row in range(len(batch["labels"])):
        prompt_length = int((batch["labels"][row] != -100).nonzero()[0])
        ids = batch["input_ids"][row : row + 1, :prompt_length]
        out: list[int] = []
        for _ in range(steps):
            logits = model(input_ids=ids, pixel_values=batch["pixel_values"][row : row + 1]).logits
            token = int(logits[0, -1].argmax())
            out.append(token)
            if token == EOS_ID:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        answers.append(out)
    return answers


@pytest.mark.slow
def test_digits_vqa_has_headroom_and_exact_match_is_greedy_decoding(digits_task: DigitsVQATask) -> None:
    """The untuned model answers (almost) nothing; 200 steps of training all parameters learn a lot."""
    model = digits_task.build_model()
    untuned = digits_task.evaluate(model, "val")
    torch.manual_seed(0)
    model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    stream = digits_task.batches("train", 32, seed=0)
    for _ in range(200):
        loss = digits_task.loss(model, next(stream))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tuned = digits_task.evaluate(model, "val")
    assert untuned < 0.05
    assert tuned > 0.45 and tuned > untuned + 0.4, (untuned, tuned)

    batch = next(digits_task.batches("test", 48, seed=0))
    model.eval()
    with torch.no_grad():
        teacher_forced = rows_exactly_right(model(**batch).logits, batch["labels"]).tolist()
        greedy = greedy_answers(model, batch, steps=4)
    references = [[t for t in row.tolist() if t != -100] for row in batch["labels"]]
    assert teacher_forced == [g == r for g, r in zip(greedy, references, strict=True)]
    assert 0 < sum(teacher_forced) < len(teacher_forced)  # both outcomes are exercised


# ---- builtin:minilm-topics ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def topics() -> MiniLMTopicsTask:
    return MiniLMTopicsTask()


def test_minilm_topics_data_is_synthetic_deterministic_and_disjoint(topics: MiniLMTopicsTask) -> None:
    assert "SYNTHETIC" in topics.description and "synthetic" in (minilm_topics.__doc__ or "")
    texts = {split: topics.examples(split)[0] for split in ("train", "val", "test")}
    assert {s: len(t) for s, t in texts.items()} == {"train": 2000, "val": 400, "test": 400}
    assert not set(texts["train"]) & set(texts["val"]) and not set(texts["train"]) & set(texts["test"])
    assert MiniLMTopicsTask().examples("val") == topics.examples("val")
    counts = np.bincount(topics.examples("train")[1], minlength=len(LABELS))
    assert counts.min() > 300 and len(LABELS) == 5
    assert topics.tensors("train")["input_ids"].shape[1] <= 32


def test_minilm_topics_trains_its_head_and_evaluates(topics: MiniLMTopicsTask) -> None:
    model = topics.build_model()
    assert topics.head_modules == ("classifier",)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    model.get_submodule("classifier")  # the name the proxy looks up
    assert any(name.startswith("encoder.layer.0.attention.self.query") for name, _ in model.named_modules())
    before = snapshot(model)
    untuned = topics.evaluate(model, "val")
    assert 0.0 <= untuned <= 1.0 and unchanged(model, before)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    stream = topics.batches("train", 32, seed=0)
    losses = []
    for _ in range(6):
        loss = topics.loss(model, next(stream))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert model.training and 0.0 <= topics.evaluate(model, "val", batch_size=128) <= 1.0 and model.training


# ---- registry -----------------------------------------------------------------------------------


def test_registry_resolves_the_builtins(pretrained_tiny_vlm_dir) -> None:
    assert isinstance(load_task("builtin:digits-vqa", "builtin:tiny-vlm"), DigitsVQATask)
    saved = load_task("builtin:digits-vqa", str(pretrained_tiny_vlm_dir))
    assert isinstance(saved, DigitsVQATask) and saved.model_dir == pretrained_tiny_vlm_dir
    assert isinstance(load_task("builtin:minilm-topics", "builtin:minilm"), MiniLMTopicsTask)


@pytest.mark.parametrize(
    ("task", "model", "field", "text"),
    [
        ("builtin:nope", "builtin:tiny-vlm", "task", "builtin:digits-vqa, builtin:fashion-vqa, "),
        ("no/such/file.jsonl", "builtin:tiny-vlm", "task", "no/such/file.jsonl"),
        ("builtin:digits-vqa", "builtin:minilm", "model", "builtin:tiny-vlm"),
        ("builtin:minilm-topics", "builtin:tiny-vlm", "model", "builtin:minilm"),
        ("builtin:fashion-vqa", "builtin:minilm", "model", "builtin:tiny-vlm"),
        ("builtin:minilm-tweets", "builtin:tiny-vlm", "model", "builtin:minilm"),
        ("builtin:digits-vqa", "builtin:gpt9", "model", "builtin:gpt9"),
        ("builtin:minilm-topics", "nobody/not-a-cached-model", "model", "never downloads"),
    ],
)
def test_registry_errors_name_the_field(task: str, model: str, field: str, text: str) -> None:
    with pytest.raises(TaskError, match=text) as caught:
        load_task(task, model)
    assert caught.value.field == field and str(caught.value).startswith(field + ":")
