"""JSONL visual question answering (see ``trainer.tasks.jsonl`` for the file format).

Two kinds of model:

- ``builtin:tiny-vlm`` or a directory saved from it: images become grayscale 28×28 in [0, 1]
  (resized as they are; MNIST-like digits are white on black), questions and answers are split
  into words of its 64-word vocabulary (``?``, ``.`` and ``:`` are words of their own). An answer
  word outside the vocabulary is an error; a question word outside it reads as ``<unk>``.
- any other vision-language model directory with a processor (LLaVA, LLaVA-NeXT, Idefics3,
  Qwen2-VL, Qwen2.5-VL, PaliGemma; loaded by ``trainer.tasks.vlm_processor``): the prompt is the
  processor's chat template applied to an image and the question when it has one, else
  ``"<image> question"``; the answer and the EOS token follow it. The prompt alone and prompt +
  answer go through the processor in one call, and the labels start where the two token rows
  first differ, so with a subword tokenizer the boundary is that of the joint tokenization. A
  processor that takes the answer as ``suffix`` (PaliGemma) gets it that way: its
  ``token_type_ids`` then mark the answer, over which the model attends causally, and label it.
  Images are decoded batch by batch; one image per example (no video).

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
from ranktune.trainer.tasks.vlm_processor import load_processor, one_line, select_examples, takes_suffix
from ranktune.trainer.tasks.vqa import IGNORE_INDEX, AnswerTask, tiny_vlm_qa_tensors

if TYPE_CHECKING:
    import torch
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


def answer_start(prompt: torch.Tensor, prompt_length: int, full: torch.Tensor) -> int:
    """Where the answer starts in ``full``: after the prompt's tokens, or where the two rows first
    differ if the joint tokenization merged the prompt's last token with the answer."""
    differ = (prompt[:prompt_length] != full[:prompt_length]).nonzero()
    return int(differ[0, 0]) if len(differ) else prompt_length


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


NESTED_IMAGE_PROCESSORS = frozenset({"SmolVLMProcessor", "Idefics3Processor"})


class JsonlProcessorVQATask(AnswerTask):
    """VQA from JSONL for a vision-language model directory with a processor."""

    name: ClassVar[str] = "jsonl:vqa"
    description: ClassVar[str] = JsonlTinyVQATask.description

    def __init__(
        self, model_dir: Path, splits: dict[Split, list[Record]], source: Path, model: str | None = None
    ) -> None:
        self.model_dir, self.source, self.splits = model_dir, source, splits
        self.model = model or str(model_dir)
        self.processor: Any = load_processor(model_dir, self.model)
        self.processor.tokenizer.padding_side = "right"
        self.answer_as_suffix = takes_suffix(self.processor)
        for records in splits.values():
            for record in records:
                if not record.image_path().is_file():
                    raise TaskError(f"task: {record.where}: image {record.data['image']!r} not found "
                                    f"({record.image_path()})")  # fmt: skip
        self.encode(splits["train"][:2])  # a processor that cannot encode the data fails now, not in training

    def prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}, {"type": "text", "text": question}]
            messages = [{"role": "user", "content": content}]
            return str(
                self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            )
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}{question}" if self.answer_as_suffix else f"{image_token} {question}"

    def encode(self, records: Sequence[Record]) -> Batch:
        """Input tensors and answer-only labels of ``records`` (see the module doc)."""
        import torch

        prompts = [self.prompt(r.data["question"]) for r in records]
        answers = [r.data["answer"] for r in records]
        images = [open_image(r, "RGB") for r in records]
        n = len(records)
        if self.answer_as_suffix:
            batch = select_examples(self._process(images, prompts, suffix=answers), 0, n, n, self.model)
            if "token_type_ids" not in batch:
                raise TaskError(f"model: the processor of {self.model} takes a suffix but marks no "
                                "token_type_ids", field="model")  # fmt: skip
            answer = batch["token_type_ids"] == 1
            batch.pop("labels", None)  # rebuilt below, as for every model
        else:
            eos = self.processor.tokenizer.eos_token or ""
            full = [f"{p} {a}{eos}" for p, a in zip(prompts, answers, strict=True)]
            encoded = self._process(images + images, prompts + full)
            prompt = select_examples(encoded, 0, n, 2 * n, self.model)
            batch = select_examples(encoded, n, 2 * n, 2 * n, self.model)
            lengths = prompt["attention_mask"].sum(dim=1).tolist()
            starts = [answer_start(p, length, f) for p, length, f
                      in zip(prompt["input_ids"], lengths, batch["input_ids"], strict=True)]  # fmt: skip
            answer = torch.arange(batch["input_ids"].shape[1]) >= torch.tensor(starts).unsqueeze(1)
        labels = batch["input_ids"].clone()
        labels[~answer | (batch["attention_mask"] == 0)] = IGNORE_INDEX
        batch["labels"] = labels
        return batch

    def _process(self, images: list[Image.Image], texts: list[str], **extra: Any) -> Any:
        # SmolVLM's processor reads a flat list of images as one example's many images: one per example.
        nested = type(self.processor).__name__ in NESTED_IMAGE_PROCESSORS
        given: Any = [[image] for image in images] if nested else images
        try:
            return self.processor(images=given, text=texts, return_tensors="pt", padding=True, **extra)
        except Exception as e:  # the processor is the model's own code: its failures are the model's
            raise TaskError(f"model: the processor of {self.model} cannot encode the data in "
                            f"{self.source} ({one_line(e)})", field="model") from e  # fmt: skip

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
    return JsonlProcessorVQATask(model_dir, splits, source, model)
