"""The contract between a task and the proxy fine-tune.

A task owns its data and knows how to build the base model it fine-tunes, how to batch its
examples for that model, the training loss and the validation metric. The proxy fine-tune
(``trainer.proxy``) only injects adapters, runs the loop and calls these methods.

Contract:
- ``build_model`` returns the pretrained base on the CPU in fp32, every parameter frozen
  (``requires_grad=False``) except a task head the task must train (e.g. a new classifier),
  which it names in ``head_modules``. Adapters are injected afterwards by the caller. It is built
  in the class the model's directory names (``trainer.models.model_class``), so that a schedule
  planned on the model spec names the same modules. Heads an exported adapter carries whole (PEFT's
  ``modules_to_save``) are also in ``saved_heads``: those that belong to that class, and a new head
  that a reload attaches the same way (image classification's ``classifier`` on a bare vision model).
- ``batches(split, batch_size, seed)`` yields dicts of CPU tensors. For ``"train"`` it is an
  endless, deterministic stream (reshuffled each epoch from ``seed``); for ``"val"`` and
  ``"test"`` it is one pass in a fixed order.
- ``loss(model, batch)`` returns a scalar tensor; ``evaluate_outcomes(model, split, batch_size)``
  returns, per example of the split in its fixed order, the outcome of the task's ``metric``: a bool
  CPU tensor (whether the model got it right; the metric is a rate in [0, 1]) or a float one (e.g.
  the example's loss). It never changes the model's weights or mode for the caller (it may switch to
  eval and must switch back). ``evaluate`` is the outcomes' mean: the metric. Both move batches to
  the device of the model's first parameter; the caller may wrap them in ``torch.autocast``.
- ``metric`` is the default objective. A task that reports more than one metric lists them all,
  each with the direction that is better, in ``metric_directions`` (default objective first) and
  returns any of them per example from ``metric_outcomes``; a task with one metric overrides neither.
- ``loss_items(batch)`` is how many terms ``loss`` averages over (examples, or trained tokens for a
  per-token loss): gradient accumulation weights micro-batches by it, so k micro-batches train as
  one batch k times as large would.
- ``set_max_seq_len(n)`` cuts the task's tokenized text at ``n`` tokens (None: its default); a task
  without text it can cut (images, VQA) refuses a number with a ``TaskError`` on ``proxy.max_seq_len``.
- Nothing downloads: data and weights are built in, bundled in packages, or read from local files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from ranktune.trainer.errors import TaskError

if TYPE_CHECKING:
    import torch
    from torch import nn

Split = Literal["train", "val", "test"]
Direction = Literal["maximize", "minimize"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
Batch = dict[str, "torch.Tensor"]


class Task(ABC):
    name: ClassVar[str]
    metric: ClassVar[str] = "accuracy"
    description: ClassVar[str] = ""  # one line for listings: what the data is (say if it is synthetic)
    head_modules: tuple[str, ...] = ()  # module names of task heads trained in full (never sites)
    saved_heads: tuple[str, ...] = ()  # those of head_modules an exported adapter carries

    @abstractmethod
    def build_model(self) -> nn.Module: ...

    @abstractmethod
    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]: ...

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def evaluate_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        """Per example of ``split``, in its fixed order: ``metric``'s outcome (right or not, or a float)."""

    def metric_directions(self) -> dict[str, Direction]:
        """Every metric the task reports and which way is better; the default objective first."""
        return {self.metric: "maximize"}

    def metric_outcomes(
        self, model: nn.Module, metric: str, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        """Per example of ``split``: the outcome of ``metric``, one of ``metric_directions``."""
        if metric != self.metric:
            raise ValueError(f"{type(self).__name__} reports {self.metric}, not {metric}")
        return self.evaluate_outcomes(model, split, batch_size)

    def evaluate(self, model: nn.Module, split: Split = "val", batch_size: int = 256) -> float:
        outcomes = self.evaluate_outcomes(model, split, batch_size)
        if outcomes.numel() == 0:
            raise ValueError(f"{self.metric} of an empty {split} split")
        return float(outcomes.float().mean())

    def split_size(self, split: Split) -> int:
        """Number of examples in a split (for progress and reports)."""
        raise NotImplementedError

    def loss_items(self, batch: Batch) -> int:
        """How many terms ``loss`` averages over for ``batch``: its examples, unless overridden."""
        return len(next(iter(batch.values())))

    def set_max_seq_len(self, max_seq_len: int | None) -> None:
        """Cut tokenized text at ``max_seq_len`` tokens; None keeps (or restores) the task's default.

        Here: the task has no text to cut (cutting a VQA prompt would drop image tokens or the answer).
        """
        if max_seq_len is not None:
            raise TaskError(
                f"proxy.max_seq_len: {self.name} has no text it could cut (it applies to causal-LM and "
                "text-classification tasks); leave it unset",
                field="proxy",
            )

    def data_sha256(self) -> str:
        """A hash of every split's examples (what was trained and scored on), to key stored results."""
        raise NotImplementedError(f"{type(self).__name__} has no data fingerprint")


def sha256_of(*parts: object) -> str:
    """sha256 over ``parts``: bytes-like values (numpy arrays included) as they are, the rest as JSON."""
    import hashlib
    import json

    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "tobytes"):
            digest.update(part.tobytes())  # type: ignore[union-attr]
        elif isinstance(part, bytes):
            digest.update(part)
        else:
            digest.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()


# Small helpers shared by the tasks.


def next_token_labels(batch: Batch, ignore: int = -100) -> int:
    """Tokens a next-token loss averages over: labels set from the second position on."""
    return int((batch["labels"][:, 1:] != ignore).sum())


def check_max_seq_len(max_seq_len: int, model_dir: Path | None) -> None:
    """Refuse a length beyond the positions the model has (when its config says how many)."""
    from transformers import AutoConfig

    if model_dir is None:
        return
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True).get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < max_seq_len:
        raise TaskError(
            f"proxy.max_seq_len: {max_seq_len} is more than the {positions} positions of the model in "
            f"{model_dir}; use at most {positions}",
            field="proxy",
        )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter: where ``loss`` and ``evaluate`` move batches."""
    return next(model.parameters()).device


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device) for key, value in batch.items()}


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; every module's own train/eval flag restored on the way out."""
    import torch

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: a module may cache tensors reused in training
            yield
    finally:
        for module, training in modes:
            module.training = training


def tensor_batches(tensors: Batch, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
    """Batches of rows of equally long tensors, following the contract of ``Task.batches``.

    ``"train"``: endless; each epoch is a fresh permutation drawn from ``seed``, cut into full
    batches (the remainder is dropped for that epoch only, so every batch has the same shape).
    ``"val"``/``"test"``: one pass in row order, the last batch possibly smaller.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    size = len(next(iter(tensors.values())))
    if split != "train":
        for start in range(0, size, batch_size):
            yield {key: value[start : start + batch_size] for key, value in tensors.items()}
        return
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(size, generator=generator)
        for start in range(0, max(1, size - batch_size + 1), batch_size):
            rows = order[start : start + batch_size]
            yield {key: value[rows] for key, value in tensors.items()}
