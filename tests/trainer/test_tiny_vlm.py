from __future__ import annotations

import torch
from transformers import LlavaForConditionalGeneration

from ranktune.trainer.builtin.tiny_vlm import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    IMAGE_TOKENS,
    VOCABULARY,
    tiny_vlm_config,
    tiny_vlm_tokenizer,
)


def test_tokenizer_round_trips_questions_and_answers() -> None:
    tokenizer = tiny_vlm_tokenizer()
    text = "<image> is this digit greater than four ?"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == IMAGE_ID and max(ids) < len(VOCABULARY)
    assert tokenizer.decode(ids) == text
    assert tokenizer("banana")["input_ids"] == [tokenizer.unk_token_id]


def test_forward_and_backward_on_a_digit_batch() -> None:
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(tiny_vlm_config())
    images = torch.rand(3, 1, 28, 28)
    text = [BOS_ID, VOCABULARY.index("seven"), EOS_ID]
    input_ids = torch.tensor([[IMAGE_ID] * IMAGE_TOKENS + text] * 3)
    labels = input_ids.clone()
    labels[:, :IMAGE_TOKENS] = -100
    out = model(input_ids=input_ids, pixel_values=images, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.model.vision_tower.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "image features must reach the loss"
