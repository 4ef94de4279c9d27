"""Visual question answering for LLaVA-layout models: sequences, loss and exact-match accuracy.

A sequence is the prompt (image tokens, ``<bos>``, the question), the answer tokens and ``<eos>``,
right-padded with ``<pad>``. Labels are -100 everywhere except on the answer tokens and ``<eos>``:
the loss is next-token cross-entropy on the answer only.

Exact match is measured with one teacher-forced forward pass: an example counts when the argmax at
every position before an answer token (and before ``<eos>``) is that token. This is exactly the
exact match of greedy decoding: greedy decoding picks the argmax given the tokens so far, and as
long as every pick was right those tokens are the reference ones, so it reproduces the answer
followed by ``<eos>`` if and only if every teacher-forced argmax is right. Right padding and causal
attention keep the padded positions from changing any of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ranktune.trainer.builtin.tiny_vlm import BOS_ID, EOS_ID, IMAGE_ID, IMAGE_TOKENS, PAD_ID
from ranktune.trainer.tasks.base import (
    Batch,
    Split,
    Task,
    evaluating,
    model_device,
    next_token_labels,
    to_device,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

IGNORE_INDEX = -100


def qa_tensors(
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    *,
    pad_id: int,
    length: int | None = None,
) -> Batch:
    """``input_ids``, ``attention_mask`` and ``labels`` for prompt + answer rows (answers end in EOS)."""
    import torch

    rows = [list(p) + list(a) for p, a in zip(prompts, answers, strict=True)]
    width = length if length is not None else max(len(r) for r in rows)
    if any(len(r) > width for r in rows):
        raise ValueError(f"a question and answer need {max(len(r) for r in rows)} tokens, more than {width}")
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def tiny_vlm_qa_tensors(
    questions: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], length: int | None = None
) -> Batch:
    """The tiny VLM's layout: ``<image>``×16, ``<bos>``, question, answer, ``<eos>``, ``<pad>``…"""
    prompts = [[IMAGE_ID] * IMAGE_TOKENS + [BOS_ID, *q] for q in questions]
    return qa_tensors(prompts, [[*a, EOS_ID] for a in answers], pad_id=PAD_ID, length=length)


def qa_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens and ``<eos>`` of the batch."""
    loss = model(**to_device(batch, model_device(model))).loss
    assert loss is not None, "the model computed no loss: are labels passed on?"
    return loss  # type: ignore[no-any-return]


def rows_exactly_right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: is the argmax right at every labelled position (teacher forcing, shifted by one)?"""
    predicted = logits[:, :-1].argmax(dim=-1)
    target = labels[:, 1:]
    return ((predicted == target) | (target == IGNORE_INDEX)).all(dim=-1)


def exact_match(model: nn.Module, batches: Iterable[Batch]) -> torch.Tensor:
    """Per example: does greedy decoding reproduce its answer exactly (see the module doc)? On the CPU."""
    import torch

    device = model_device(model)
    right = []
    with evaluating(model):
        for batch in batches:
            inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, device)
            logits = model(**inputs).logits
            right.append(rows_exactly_right(logits.float(), batch["labels"].to(device)).cpu())
    return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool)


class AnswerTask(Task):
    """A task answered in words: the loss is over the answer tokens, the metric exact match per example."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return qa_loss(model, batch)

    def loss_items(self, batch: Batch) -> int:
        return next_token_labels(batch, IGNORE_INDEX)  # the model's loss: a mean over answer tokens

    def evaluate_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        return exact_match(model, self.batches(split, batch_size, seed=0))
