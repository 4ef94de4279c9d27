"""JSONL visual question answering (see ``trainer.tasks.jsonl`` for the file format).

Two kinds of model:

- ``builtin:tiny-vlm`` or a directory saved from it: images become grayscale 28×28 in [0, 1]
  (resized as they are; MNIST-like digits are white on black), questions and answers are split
  into words of its 64-word vocabulary (``?``, ``.`` and ``:`` are words of their own). An answer
  word outside the vocabulary is an error; a question word outside it reads as ``<unk>``.
- any other LLaVA-style model directory with a processor (``AutoProcessor``): the prompt is the
  processor's chat template applied to an image and the question when it has one, else
  ``"<image> question"``; the answer and the EOS token follow it. Prompts and answers are
  tokenized together, so with a subword tokenizer the label boundary is that of the joint
  tokenization. Images are decoded batch by batch.

Both use the answer-only loss and the exact-match metric of ``trainer.tasks.vqa``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ranktune.trainer.builtin.tiny_vlm import IMAGE_SIZE, IMAGE_TOKENS, UNK_ID, VOCABULARY
from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import Batch, Split, Task, tensor_batches
from ranktune.trainer.tasks.jsonl_records import Record
from ranktune.trainer.tasks.vqa import IGNORE_INDEX, AnswerTask, tiny_vlm_qa_tensors

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

log = logging.getLogger(__name__)
_WORD_INDEX = {word: i for i, word in enumerate(VOCABULARY)}
MAX_TOKENS = 64  # the tiny VLM's max_position_embeddings


def open_image(record: Record, mode: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    path = record.image_path()
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except FileNotFoundError as e:
        raise TaskError(f"task: {record.where}: image {record.data['image']!r} not found ({path})") from e
    except (OSError, UnidentifiedImageError) as e:
        raise TaskError(f"task: {record.where}: cannot read image {path}: {e}") from e


def tiny_words(text: str) -> list[str]:
    return re.sub(r"([?.:])", r" \1 ", text.lower()).split()


class JsonlTinyVQATask(AnswerTask):
    """VQA from JSONL for ``builtin:tiny-vlm`` or a directory saved from it."""

    name: ClassVar[str] = "jsonl:vqa"
    description: ClassVar[str] = "Visual question answering from a user's JSONL files; metric: exact match."

    def __init__(self, model_dir: Path | None, splits: dict[Split, list[Record]], source: Path) -> None:
        self.model_dir, self.source = model_dir, source
        self._sizes = {split: len(records) for split, records in splits.items()}
        self._tensors = {split: self._encode(records) for split, records in splits.items()}

    def _encode(self, records: Sequence[Record]) -> Batch:
        import torch
        from PIL import Image

        questions, answers, images, unknown = [], [], [], 0
        for record in records:
            question = [_WORD_INDEX.get(w, UNK_ID) for w in tiny_words(record.data["question"])]
            unknown += question.count(UNK_ID)
            answer = []
            for word in tiny_words(record.data["answer"]):
                if word not in _WORD_INDEX:
                    raise TaskError(
                        f"task: {record.where}: key 'answer': the word {word!r} is not in the tiny VLM's "
                        f"vocabulary ({', '.join(VOCABULARY[5:])})"
                    )
                answer.append(_WORD_INDEX[word])
            if IMAGE_TOKENS + 2 + len(question) + len(answer) > MAX_TOKENS:
                raise TaskError(f"task: {record.where}: question and answer are too long for the tiny VLM")
            questions.append(question)
            answers.append(answer)
            gray = open_image(record, "L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            images.append(np.asarray(gray, dtype=np.float32) / 255.0)
        if unknown:
            log.warning("%s: %d question words are not in the tiny VLM's vocabulary", self.source, unknown)
        tensors = tiny_vlm_qa_tensors(questions, answers)
        tensors["pixel_values"] = torch.from_numpy(np.stack(images)).unsqueeze(1)
        return tensors

    def build_model(self) -> nn.Module:
        from ranktune.trainer.builtin.pretrain import frozen_tiny_vlm

        return frozen_tiny_vlm(self.model_dir)

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        return tensor_batches(self._tensors[split], split, batch_size, seed)

    def split_size(self, split: Split) -> int:
        return self._sizes[split]


class JsonlProcessorVQATask(AnswerTask):
    """VQA from JSONL for a LLaVA-style model directory with an ``AutoProcessor``."""

    name: ClassVar[str] = "jsonl:vqa"
    description: ClassVar[str] = JsonlTinyVQATask.description

    def __init__(self, model_dir: Path, splits: dict[Split, list[Record]], source: Path) -> None:
        from transformers import AutoProcessor

        self.model_dir, self.source, self.splits = model_dir, source, splits
        try:
            self.processor: Any = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise TaskError(f"model: {model_dir} has no usable processor for images and text: {e}",
                            field="model") from e  # fmt: skip
        self.processor.tokenizer.padding_side = "right"
        for records in splits.values():
            for record in records:
                if not record.image_path().is_file():
                    raise TaskError(f"task: {record.where}: image {record.data['image']!r} not found "
                                    f"({record.image_path()})")  # fmt: skip

    def prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": question}]
            messages = [{"role": "user", "content": content}]
            return str(
                self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            )
        return f"{getattr(self.processor, 'image_token', '<image>')} {question}"

    def encode(self, records: Sequence[Record]) -> Batch:
        """Prompt and prompt + answer through the processor together; labels on the answer part only."""
        eos = self.processor.tokenizer.eos_token or ""
        prompts = [self.prompt(r.data["question"]) for r in records]
        full = [f"{p} {r.data['answer']}{eos}" for p, r in zip(prompts, records, strict=True)]
        images = [open_image(r, "RGB") for r in records]
        encoded = self.processor(
            images=images + images, text=prompts + full, return_tensors="pt", padding=True
        )
        n = len(records)
        prompt_lengths = encoded["attention_mask"][:n].sum(dim=1).tolist()
        batch = {key: value[n:] for key, value in encoded.items() if hasattr(value, "shape")}
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        for row, length in enumerate(prompt_lengths):
            labels[row, :length] = IGNORE_INDEX
        batch["labels"] = labels
        return batch

    def build_model(self) -> nn.Module:
        from transformers import AutoModelForImageTextToText

        from ranktune.trainer.builtin.pretrain import quiet_transformers

        with quiet_transformers():
            model = AutoModelForImageTextToText.from_pretrained(
                self.model_dir, local_files_only=True, dtype="float32"
            )
        model.requires_grad_(False)
        return model  # type: ignore[no-any-return]

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        import torch

        records = self.splits[split]
        rows = {"row": torch.arange(len(records))}
        for chosen in tensor_batches(rows, split, batch_size, seed):
            yield self.encode([records[i] for i in chosen["row"].tolist()])

    def split_size(self, split: Split) -> int:
        return len(self.splits[split])


def vqa_task(model: str, model_dir: Path | None, splits: dict[Split, list[Record]], source: Path) -> Task:
    """The tiny-VLM path for ``builtin:tiny-vlm`` and its saved copies, the processor path otherwise."""
    from ranktune.trainer.builtin.pretrain import is_tiny_vlm_dir

    if model_dir is None or is_tiny_vlm_dir(model_dir):
        return JsonlTinyVQATask(model_dir, splits, source)
    if (
        not (model_dir / "processor_config.json").is_file()
        and not (model_dir / "preprocessor_config.json").is_file()
    ):
        raise TaskError(
            f"model: {model} is a vision-language model without a saved processor "
            "(processor_config.json or preprocessor_config.json); save it with processor.save_pretrained",
            field="model",
        )
    return JsonlProcessorVQATask(model_dir, splits, source)
