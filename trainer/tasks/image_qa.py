"""Questions about images answered in words by ``builtin:tiny-vlm``: what the built-in VQA tasks share.

A subclass supplies the questions of a split (``ImageQuestion``: a row of the split's image pool, the
question, the answer), the pool's images and the word ids of its vocabulary; this base turns them into
row-aligned tensors once per split and trains and scores them the same way for every task: the loss
is over the answer and ``<eos>``, the metric exact-match accuracy with one teacher-forced pass
(``trainer.tasks.vqa``), which equals greedy decoding's exact match.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ranktune.trainer.tasks.base import SPLITS, Batch, Split, sha256_of, tensor_batches
from ranktune.trainer.tasks.vqa import AnswerTask, tiny_vlm_qa_tensors

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


@dataclass(frozen=True)
class ImageQuestion:
    image: int  # row in the split's image pool
    question: str
    answer: str


Template = tuple[str, Callable[[int], str]]  # a question and its answer as a function of the label


def questions_from_templates(
    labels: np.ndarray, templates: Sequence[Template], per_image: int, seed: int
) -> list[ImageQuestion]:
    """``per_image`` questions with distinct templates for every image, deterministic in ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    questions = []
    for image, label in enumerate(labels.tolist()):
        for template in rng.permutation(len(templates))[:per_image].tolist():
            question, answer = templates[template]
            questions.append(ImageQuestion(image, question, answer(label)))
    return questions


class TinyVLMQuestionsTask(AnswerTask):
    """Answer questions about images in words with the tiny VLM; exact-match accuracy."""

    metric: ClassVar[str] = "accuracy"
    sequence_length: ClassVar[int]  # 16 image tokens, <bos>, the longest question and answer, <eos>

    def __init__(self, model_dir: str | Path | None = None) -> None:
        """``model_dir``: a saved tiny-vlm directory to fine-tune instead of the built-in weights."""
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._tensors: dict[Split, Batch] = {}
        self._questions: dict[Split, list[ImageQuestion]] = {}

    @abstractmethod
    def make_questions(self, split: Split) -> list[ImageQuestion]:
        """The questions of ``split``, deterministic."""

    @abstractmethod
    def images(self, split: Split) -> np.ndarray:
        """The split's image pool as float32 (N, 1, 28, 28) in [0, 1]."""

    @abstractmethod
    def word_ids(self, text: str) -> list[int]:
        """Token ids of a question or an answer."""

    def questions(self, split: Split) -> list[ImageQuestion]:
        if split not in self._questions:
            self._questions[split] = self.make_questions(split)
        return self._questions[split]

    def tensors(self, split: Split) -> Batch:
        """Every example of ``split`` as row-aligned tensors (built once per task instance)."""
        import torch

        if split not in self._tensors:
            questions: Sequence[ImageQuestion] = self.questions(split)
            encoded = tiny_vlm_qa_tensors(
                [self.word_ids(q.question) for q in questions],
                [self.word_ids(q.answer) for q in questions],
                length=self.sequence_length,
            )
            images = torch.from_numpy(self.images(split).copy())
            encoded["pixel_values"] = images[torch.tensor([q.image for q in questions])]
            self._tensors[split] = encoded
        return self._tensors[split]

    def build_model(self) -> nn.Module:
        from ranktune.trainer.builtin.pretrain import frozen_tiny_vlm

        return frozen_tiny_vlm(self.model_dir)

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        return tensor_batches(self.tensors(split), split, batch_size, seed)

    def split_size(self, split: Split) -> int:
        return len(self.questions(split))

    def data_sha256(self) -> str:
        parts: list[object] = []
        for split in SPLITS:
            parts += [[(q.image, q.question, q.answer) for q in self.questions(split)], self.images(split)]
        return sha256_of(self.sequence_length, *parts)
