"""The path real users take: a local model and a JSONL data set.

A data set is either a directory holding ``train.jsonl`` and ``val.jsonl`` (``test.jsonl``
optional; without it the test split is the val split), or one ``.jsonl`` file that is split
80/10/10 by a permutation drawn from ``SPLIT_SEED`` (the same split on every run and machine).
Blank lines are skipped. One JSON object per line, either

- visual question answering, for a vision-language model: ``{"image": "img/0.png",
  "question": "which digit is this ?", "answer": "seven"}``; the image path is relative to the
  JSONL file's directory, or absolute;
- text classification, for a text encoder: ``{"text": "...", "label": "sports"}``; labels are
  strings, numbered in sorted order (or in the order of a ``…ForSequenceClassification``
  checkpoint's own labels, when its head was trained on exactly these);
- image classification, for a vision transformer (``trainer.tasks.image_classification``):
  ``{"image": "img/0.png", "label": "cat"}``, labels as for text classification;
- instruction tuning, for a causal LM (``trainer.tasks.jsonl_lm``): ``{"prompt": "...",
  "completion": "..."}`` or ``{"messages": [{"role": "user", "content": "..."}, {"role":
  "assistant", "content": "..."}]}``.

The kind is read from the keys of the first record and must suit the model: a vision transformer
(``…ForImageClassification``, a bare image backbone, ``builtin:tiny-vlm-vision``) takes image
classification data, any other model whose config has a ``vision_config`` VQA data, a causal LM
(``…ForCausalLM``) instruction data (or classification data), any other model classification data.
Malformed input raises ``TaskError`` naming the file, the line and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import SPLITS, Split, Task
from ranktune.trainer.tasks.classification import TextClassificationTask, label_order
from ranktune.trainer.tasks.jsonl_lm import check_messages
from ranktune.trainer.tasks.jsonl_records import Record

SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
MIN_LINES_TO_SPLIT = 10
Kind = Literal["vqa", "image_classification", "classification", "completion", "chat"]
KEYS: dict[Kind, tuple[str, ...]] = {
    "vqa": ("image", "question", "answer"),
    "image_classification": ("image", "label"),
    "classification": ("text", "label"),
    "completion": ("prompt", "completion"),
    "chat": ("messages",),
}
TEXT_KEYS: dict[Kind, tuple[str, ...]] = {**KEYS, "chat": ()}  # keys whose value is a non-empty string


def read_jsonl(path: Path) -> list[Record]:
    """Every non-blank line of ``path`` as a JSON object (not yet checked for keys)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"task: cannot read {path}: {e}") from e
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"task: {path}, line {number}: not valid JSON ({e.msg})") from e
        if not isinstance(data, dict):
            raise TaskError(f"task: {path}, line {number}: expected a JSON object, got {type(data).__name__}")
        records.append(Record(path, number, data))
    if not records:
        raise TaskError(f"task: {path} has no examples")
    return records


def read_dataset(spec: Path) -> dict[Split, list[Record]]:
    """The three splits of a data set directory or single JSONL file."""
    if spec.is_dir():
        missing = [name for name in ("train.jsonl", "val.jsonl") if not (spec / name).is_file()]
        if missing:
            raise TaskError(
                f"task: the data set directory {spec} lacks {' and '.join(missing)} "
                "(it needs train.jsonl and val.jsonl, test.jsonl is optional)"
            )
        train, val = read_jsonl(spec / "train.jsonl"), read_jsonl(spec / "val.jsonl")
        test = read_jsonl(spec / "test.jsonl") if (spec / "test.jsonl").is_file() else val
        return {"train": train, "val": val, "test": test}
    if spec.suffix != ".jsonl" or not spec.is_file():
        raise TaskError(
            f"task: {spec} is neither a .jsonl file nor a directory with train.jsonl and val.jsonl"
        )
    records = read_jsonl(spec)
    if len(records) < MIN_LINES_TO_SPLIT:
        raise TaskError(
            f"task: {spec} has {len(records)} examples; a single file is split 80/10/10 and needs at "
            f"least {MIN_LINES_TO_SPLIT} (or give a directory with train.jsonl and val.jsonl)"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(records)).tolist()
    n_val = n_test = max(1, round(SPLIT_FRACTIONS[1] * len(records)))
    n_train = len(records) - n_val - n_test
    chosen = {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }
    return {split: [records[i] for i in chosen[split]] for split in SPLITS}


def dataset_kind(splits: dict[Split, list[Record]]) -> Kind:
    """The kind from the first record's keys; then every record must have that kind's keys."""
    first = splits["train"][0]
    if "image" in first.data and "label" in first.data and "question" not in first.data:
        kind: Kind = "image_classification"
    elif "image" in first.data or "question" in first.data:
        kind = "vqa"
    elif "text" in first.data or "label" in first.data:
        kind = "classification"
    elif "prompt" in first.data or "completion" in first.data:
        kind = "completion"
    elif "messages" in first.data:
        kind = "chat"
    else:
        raise TaskError(
            f"task: {first.where}: cannot tell the kind of data from keys {sorted(first.data)}; expected "
            "image, question and answer (VQA), image and label (image classification), text and label "
            "(classification), prompt and completion or messages (instruction tuning)"
        )
    for records in splits.values():
        for record in records:
            for key in KEYS[kind]:
                if key not in record.data:
                    raise TaskError(f"task: {record.where}: missing key {key!r} (a {kind} record needs "
                                    f"{', '.join(KEYS[kind])})")  # fmt: skip
                if key not in TEXT_KEYS[kind]:
                    check_messages(record)
                elif not isinstance(record.data[key], str) or not record.data[key].strip():
                    raise TaskError(
                        f"task: {record.where}: key {key!r} must be a non-empty string, "
                        f"got {json.dumps(record.data[key])}"
                    )
    return kind


class JsonlClassificationTask(TextClassificationTask):
    """Text classification from JSONL with a local encoder and a new mean-pooling linear head (or the
    model's own head: ``TextClassificationTask``)."""

    name: ClassVar[str] = "jsonl:classification"
    description: ClassVar[str] = "Text classification from a user's JSONL files; metric: accuracy."

    def __init__(self, model_dir: Path, splits: dict[Split, list[Record]], source: Path) -> None:
        labels = sorted({record.data["label"] for records in splits.values() for record in records})
        super().__init__(model_dir, label_order(model_dir, labels))
        self.source = source
        index = {label: i for i, label in enumerate(self.label_names)}
        self._examples = {
            split: ([r.data["text"] for r in records], [index[r.data["label"]] for r in records])
            for split, records in splits.items()
        }

    def examples(self, split: Split) -> tuple[list[str], list[int]]:
        return self._examples[split]


def load_jsonl_task(spec: Path, model: str, model_dir: Path | None, *, is_vlm: bool) -> Task:
    """A task for the data set at ``spec`` and the resolved model (``model_dir`` None: built-in tiny VLM).

    ``model`` is the user's spelling, used in messages; ``is_vlm`` says whether it is a
    vision-language model.
    """
    from ranktune.trainer.tasks.image_classification import image_classification_task

    splits = read_dataset(spec)
    kind = dataset_kind(splits)
    image_task = image_classification_task(model, model_dir, splits, spec, kind)
    if image_task is not None:  # image classification data or a vision transformer (or an error)
        return image_task
    if kind == "vqa" and not is_vlm:
        raise TaskError(
            f"model: {model} is a text model but {spec} holds VQA records (image, question, answer); "
            "use a vision-language model such as builtin:tiny-vlm",
            field="model",
        )
    if kind == "classification" and is_vlm:
        raise TaskError(
            f"model: {model} is a vision-language model but {spec} holds classification records "
            "(text, label); use a text encoder such as builtin:minilm",
            field="model",
        )
    if kind == "classification":
        assert model_dir is not None
        return JsonlClassificationTask(model_dir, splits, spec)
    if kind in ("completion", "chat"):
        return _causal_lm_task(spec, model, model_dir, splits, kind, is_vlm=is_vlm)
    from ranktune.trainer.tasks.jsonl_vqa import vqa_task

    return vqa_task(model, model_dir, splits, spec)


def _causal_lm_task(
    spec: Path, model: str, model_dir: Path | None, splits: dict[Split, list[Record]], kind: Kind,
    *, is_vlm: bool,
) -> Task:  # fmt: skip
    from ranktune.trainer.models import is_causal_lm, load_config, model_class
    from ranktune.trainer.tasks.causal_lm import CausalLMTask

    records = "prompt, completion" if kind == "completion" else "messages"
    if is_vlm or model_dir is None:
        raise TaskError(
            f"model: {model} is a vision-language model but {spec} holds instruction records ({records}); "
            "use a causal language model directory (a …ForCausalLM, e.g. Llama, Qwen2, Gemma)",
            field="model",
        )
    config = load_config(str(model_dir))
    if not is_causal_lm(config):
        raise TaskError(
            f"model: {model} is a {model_class(config).__name__}, not a causal language model, but "
            f"{spec} holds instruction records ({records}); use a …ForCausalLM directory (e.g. Llama, "
            "Qwen2, Gemma) or text and label records for classification",
            field="model",
        )
    return CausalLMTask(model_dir, splits, spec, "completion" if kind == "completion" else "chat")
