"""``builtin:fashion-vqa``: questions about Fashion-MNIST clothing, answered in words by the tiny VLM.

The images are real photographs of clothing, shoes and bags (Fashion-MNIST, 28×28 grayscale, from
Debian's ``dataset-fashion-mnist``; see ``trainer.builtin.fashion_mnist`` for the pools: 12,000 /
2,000 / 6,000 images). The pretrained ``builtin:tiny-vlm`` only ever saw handwritten digits: this is
a real domain shift. Each training image gets two questions, each val and test image one, drawn from
``DATA_SEED``::

    what is this ?                              sneaker    (top, trouser, pullover, dress, coat,
                                                            sandal, shirt, sneaker, bag, boot)
    is this a shoe ?                            yes        (sandal, sneaker, boot)
    is this a shoe or a bag or clothing ?       clothing

**The vocabulary grows.** The tiny VLM's 64-token vocabulary has no word for clothing; the twelve
answer and question words above that it lacks get ids 64-75 and the embedding table (tied with the
output layer) grows to 80 rows: the old rows keep their pretrained values, the new ones are drawn
from a normal distribution with the old rows' spread (seed ``VOCAB_SEED``). The embedding table is
the task's head, trained in full as a classifier head is (10,240 parameters, the same for every
schedule); the adapters carry the rest. ``builtin:digits-vqa`` keeps the 64-token model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np

from ranktune.trainer.builtin.fashion_mnist import load_fashion
from ranktune.trainer.builtin.tiny_vlm import VOCAB_SIZE, VOCABULARY
from ranktune.trainer.tasks.base import Split
from ranktune.trainer.tasks.image_qa import ImageQuestion, TinyVLMQuestionsTask, questions_from_templates

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedModel

DATA_SEED = 13
VOCAB_SEED = 0
QUESTIONS_PER_IMAGE: dict[Split, int] = {"train": 2, "val": 1, "test": 1}
_SPLIT_SALT: dict[Split, int] = {"train": 0, "val": 1, "test": 2}
ANSWERS = ("top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
SHOES, BAGS = frozenset({5, 7, 9}), frozenset({8})
NEW_WORDS = (*ANSWERS, "shoe", "clothing")
WORD_IDS = {word: i for i, word in enumerate(VOCABULARY)} | {
    word: VOCAB_SIZE + i for i, word in enumerate(NEW_WORDS)
}
FASHION_VOCAB_SIZE = 80
EMBEDDINGS = "model.language_model.embed_tokens"
SEQUENCE_LENGTH = 29  # 16 image tokens, <bos>, ≤10 question words, 1 answer word, <eos>


def _group(label: int) -> str:
    return "shoe" if label in SHOES else "bag" if label in BAGS else "clothing"


QUESTION_TEMPLATES = (
    ("what is this ?", lambda c: ANSWERS[c]),
    ("is this a shoe ?", lambda c: "yes" if c in SHOES else "no"),
    ("is this a shoe or a bag or clothing ?", _group),
)


def make_questions(labels: np.ndarray, per_image: int, seed: int) -> list[ImageQuestion]:
    return questions_from_templates(labels, QUESTION_TEMPLATES, per_image, seed)


def grow_vocabulary(model: PreTrainedModel, size: int = FASHION_VOCAB_SIZE, seed: int = VOCAB_SEED) -> None:
    """Grow the tied embedding table to ``size`` rows (new rows: normal with the old rows' spread) and
    make it trainable."""
    import torch

    old = cast("nn.Embedding", model.get_input_embeddings()).num_embeddings
    model.resize_token_embeddings(size, mean_resizing=False)
    weight = cast("nn.Embedding", model.get_input_embeddings()).weight
    with torch.no_grad():
        spread = weight[:old].std()
        fresh = torch.randn(size - old, weight.shape[1], generator=torch.Generator().manual_seed(seed))
        weight[old:] = fresh.to(weight.dtype) * spread
    weight.requires_grad_(True)


class FashionVQATask(TinyVLMQuestionsTask):
    """Answer questions about Fashion-MNIST images in words; exact-match accuracy."""

    name: ClassVar[str] = "builtin:fashion-vqa"
    description: ClassVar[str] = (
        "Questions about REAL Fashion-MNIST images of clothing (what is this, is this a shoe, shoe or bag "
        "or clothing), answered in words by builtin:tiny-vlm, which was pretrained on digits only (a "
        "domain shift; its vocabulary grows by 12 words); test split 6,000, val 2,000; metric: exact-match "
        "accuracy of the answer."
    )
    head_modules = (EMBEDDINGS,)
    sequence_length = SEQUENCE_LENGTH

    def make_questions(self, split: Split) -> list[ImageQuestion]:
        labels = load_fashion(split).labels
        return make_questions(labels, QUESTIONS_PER_IMAGE[split], DATA_SEED * 1000 + _SPLIT_SALT[split])

    def images(self, split: Split) -> np.ndarray:
        return load_fashion(split).images

    def word_ids(self, text: str) -> list[int]:
        return [WORD_IDS[word] for word in text.split()]

    def build_model(self) -> nn.Module:
        model = super().build_model()
        grow_vocabulary(cast("PreTrainedModel", model))
        return model
