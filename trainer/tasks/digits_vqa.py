"""``builtin:digits-vqa``: questions about real handwritten digits, answered in words.

The images are the MNIST digits of the ``train`` / ``val`` / ``test`` pools of
``trainer.builtin.mnist`` (1,200 / 400 / 400 images, none of them seen in pretraining). Each image
gets several questions drawn from ``DATA_SEED`` (4 per training image, 2 per val and test image)::

    which digit is this ?                 seven
    is this digit odd or even ?           odd
    is this digit greater than four ?     yes
    is this digit less than three ?       no
    what comes after this digit ?         eight      (nine: ten)
    what comes before this digit ?        six        (zero: minus one)

The pretrained ``builtin:tiny-vlm`` only ever captioned digits, so it answers none of these
without fine-tuning: the task has the headroom a rank search needs. The metric is exact-match
accuracy of the answer, measured with one teacher-forced pass (``trainer.tasks.vqa``), which equals
greedy decoding's exact match.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np

from ranktune.trainer.builtin.mnist import load_digits
from ranktune.trainer.builtin.tiny_vlm import DIGIT_WORDS, VOCABULARY
from ranktune.trainer.tasks.base import Split
from ranktune.trainer.tasks.image_qa import ImageQuestion, TinyVLMQuestionsTask, questions_from_templates

DATA_SEED = 7
QUESTIONS_PER_IMAGE: dict[Split, int] = {"train": 4, "val": 2, "test": 2}
_SPLIT_SALT: dict[Split, int] = {"train": 0, "val": 1, "test": 2}
SEQUENCE_LENGTH = 27  # 16 image tokens, <bos>, ≤7 question words, ≤2 answer words, <eos>


# Each answer is a function of the digit alone. Comparisons with a digit named in the question
# ("greater than six") stayed at chance after 1,200 steps of full fine-tuning: too hard a
# proxy signal for a model of this size, so the thresholds are fixed.
QUESTION_TEMPLATES: tuple[tuple[str, Callable[[int], str]], ...] = (
    ("which digit is this ?", lambda d: DIGIT_WORDS[d]),
    ("is this digit odd or even ?", lambda d: "odd" if d % 2 else "even"),
    ("is this digit greater than four ?", lambda d: "yes" if d > 4 else "no"),
    ("is this digit less than three ?", lambda d: "yes" if d < 3 else "no"),
    ("what comes after this digit ?", lambda d: "ten" if d == 9 else DIGIT_WORDS[d + 1]),
    ("what comes before this digit ?", lambda d: "minus one" if d == 0 else DIGIT_WORDS[d - 1]),
)


def make_questions(labels: np.ndarray, per_image: int, seed: int) -> list[ImageQuestion]:
    return questions_from_templates(labels, QUESTION_TEMPLATES, per_image, seed)


def word_ids(text: str) -> list[int]:
    return [VOCABULARY.index(word) for word in text.split()]


class DigitsVQATask(TinyVLMQuestionsTask):
    """Answer questions about handwritten digits in words; exact-match accuracy."""

    name: ClassVar[str] = "builtin:digits-vqa"
    description: ClassVar[str] = (
        "Questions about real MNIST digits (which digit, odd or even, greater than four, less than "
        "three, what comes after/before), answered in words by builtin:tiny-vlm; the questions are "
        "generated from templates, the images were never seen in pretraining; metric: exact-match "
        "accuracy of the answer."
    )
    sequence_length = SEQUENCE_LENGTH

    def make_questions(self, split: Split) -> list[ImageQuestion]:
        labels = load_digits(split).labels
        return make_questions(labels, QUESTIONS_PER_IMAGE[split], DATA_SEED * 1000 + _SPLIT_SALT[split])

    def images(self, split: Split) -> np.ndarray:
        return load_digits(split).images

    def word_ids(self, text: str) -> list[int]:
        return word_ids(text)
