"""Resolve a task spec and a model spec to a ``Task``.

- ``builtin:digits-vqa`` (MNIST digits) and ``builtin:fashion-vqa`` (Fashion-MNIST clothing) with
  ``builtin:tiny-vlm`` (or a directory saved from it);
- ``builtin:fashion-cls`` (Fashion-MNIST's classes) with ``builtin:tiny-vlm-vision``, the tiny VLM's
  pretrained vision tower (or a vision transformer directory);
- ``builtin:minilm-topics`` (synthetic sentences), ``builtin:minilm-stdlib`` (real standard-library
  docstrings) and ``builtin:minilm-tweets`` (real labelled tweets) with ``builtin:minilm`` (or another
  local text-encoder directory);
- a JSONL file or data set directory (``trainer.tasks.jsonl``) with a local model directory, a
  Hugging Face id already in the local cache, or a built-in model. Nothing is downloaded.

Errors name the field: ``task`` for an unknown task or unreadable data, ``model`` for a model
that does not resolve or does not suit the task.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import Task

if TYPE_CHECKING:
    from transformers import PretrainedConfig

BUILTIN_TASKS = {
    "builtin:digits-vqa": "builtin:tiny-vlm",
    "builtin:fashion-vqa": "builtin:tiny-vlm",
    "builtin:fashion-cls": "builtin:tiny-vlm-vision",
    "builtin:minilm-topics": "builtin:minilm",
    "builtin:minilm-stdlib": "builtin:minilm",
    "builtin:minilm-tweets": "builtin:minilm",
}
TINY_VLM, MINILM = "builtin:tiny-vlm", "builtin:minilm"
TINY_VISION = "builtin:tiny-vlm-vision"


def load_task(task: str, model: str) -> Task:
    """The task ``task`` fine-tuning ``model``; raises ``TaskError`` (field ``task`` or ``model``)."""
    from ranktune.trainer.tasks.digits_vqa import DigitsVQATask
    from ranktune.trainer.tasks.fashion_vqa import FashionVQATask
    from ranktune.trainer.tasks.jsonl import load_jsonl_task
    from ranktune.trainer.tasks.minilm_stdlib import MiniLMStdlibTask
    from ranktune.trainer.tasks.minilm_topics import MiniLMTopicsTask
    from ranktune.trainer.tasks.minilm_tweets import MiniLMTweetsTask

    vlm_tasks: dict[str, Callable[..., Task]] = {
        "builtin:digits-vqa": DigitsVQATask,
        "builtin:fashion-vqa": FashionVQATask,
    }
    text_tasks: dict[str, Callable[..., Task]] = {
        "builtin:minilm-topics": MiniLMTopicsTask,
        "builtin:minilm-stdlib": MiniLMStdlibTask,
        "builtin:minilm-tweets": MiniLMTweetsTask,
    }
    if task == "builtin:fashion-cls":
        from ranktune.trainer.tasks.fashion_cls import fashion_cls_task

        return fashion_cls_task(model, None if model == TINY_VISION else resolve_model(model)[0])
    if task in vlm_tasks:
        if model == TINY_VLM:
            return vlm_tasks[task]()
        model_dir, _ = resolve_model(model)
        if not _is_tiny_vlm(model_dir):
            raise _mismatch(task, model)
        return vlm_tasks[task](model_dir)
    if task in text_tasks:
        if model == MINILM:
            return text_tasks[task]()
        model_dir, is_vlm = resolve_model(model)
        if is_vlm or model_dir is None:
            raise _mismatch(task, model)
        return text_tasks[task](model_dir)
    if task.startswith("builtin:"):
        raise TaskError(f"task: unknown built-in task {task!r}; choose one of {', '.join(BUILTIN_TASKS)}")
    path = Path(task).expanduser()
    if not path.exists():
        raise TaskError(
            f"task: {task!r} is neither a built-in task ({', '.join(BUILTIN_TASKS)}) nor an existing "
            "JSONL file or data set directory"
        )
    model_dir, is_vlm = resolve_model(model)
    return load_jsonl_task(path, model, model_dir, is_vlm=is_vlm)


def resolve_model(model: str) -> tuple[Path | None, bool]:
    """A model spec as (local directory, is it a vision-language model). The directory is None for the
    built-in tiny VLM and for its vision tower (made only when its weights are needed)."""
    from ranktune.trainer.models import BUILTIN_MODELS, minilm_dir

    if model == TINY_VLM:
        return None, True
    if model == TINY_VISION:
        return None, False
    if model == MINILM:
        return minilm_dir(), False
    if model.startswith("builtin:"):
        raise TaskError(f"model: unknown built-in model {model!r}; choose one of {', '.join(BUILTIN_MODELS)}",
                        field="model")  # fmt: skip
    path = Path(model).expanduser()
    if not path.is_dir():
        path = _cached_hub_snapshot(model)
    return path, _is_vlm(_config(path, model))


def _cached_hub_snapshot(model: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, ValueError) as e:
        raise TaskError(
            f"model: {model!r} is not a built-in model, a local model directory or a Hugging Face id in "
            "the local cache (ranktune never downloads: fetch it first, e.g. `hf download`)",
            field="model",
        ) from e


def _config(path: Path, model: str) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TaskError(f"model: {model!r} has no usable config.json in {path}: {e}", field="model") from e


def _is_vlm(config: PretrainedConfig) -> bool:
    return getattr(config, "vision_config", None) is not None


def _is_tiny_vlm(model_dir: Path | None) -> bool:
    from ranktune.trainer.builtin.pretrain import is_tiny_vlm_dir

    return model_dir is not None and is_tiny_vlm_dir(model_dir)


def _mismatch(task: str, model: str) -> TaskError:
    return TaskError(
        f"model: {task} fine-tunes {BUILTIN_TASKS[task]} (or a saved copy of it), not {model!r}; "
        f"use --model {BUILTIN_TASKS[task]} or a JSONL task for this model",
        field="model",
    )
