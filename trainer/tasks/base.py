"""The contract between a task and the proxy fine-tune.

A task owns its data and knows how to build the base model it fine-tunes, how to batch its
examples for that model, the training loss and the validation metric. The proxy fine-tune
(``trainer.proxy``) only injects adapters, runs the loop and calls these methods.

Contract:
- ``build_model`` returns the pretrained base on the CPU in fp32, every parameter frozen
  (``requires_grad=False``) except a task head the task must train (e.g. a new classifier),
  which it names in ``head_modules``. Adapters are injected afterwards by the caller.
- ``batches(split, batch_size, seed)`` yields dicts of CPU tensors. For ``"train"`` it is an
  endless, deterministic stream (reshuffled each epoch from ``seed``); for ``"val"`` and
  ``"test"`` it is one pass in a fixed order.
- ``loss(model, batch)`` returns a scalar tensor; ``evaluate(model, split, batch_size)`` returns
  the task's metric in [0, 1] (higher is better) and never changes the model's weights or mode
  for the caller (it may switch to eval and must switch back). Both move batches to the device of
  the model's first parameter; the caller may wrap them in ``torch.autocast``.
- Nothing downloads: data and weights are built in, bundled in packages, or read from local files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

Split = Literal["train", "val", "test"]
Batch = dict[str, "torch.Tensor"]


class Task(ABC):
    name: ClassVar[str]
    metric: ClassVar[str] = "accuracy"
    head_modules: tuple[str, ...] = ()  # module names of task heads trained in full (never sites)

    @abstractmethod
    def build_model(self) -> nn.Module: ...

    @abstractmethod
    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]: ...

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor: ...

    @abstractmethod
    def evaluate(self, model: nn.Module, split: Split = "val", batch_size: int = 256) -> float: ...

    def split_size(self, split: Split) -> int:
        """Number of examples in a split (for progress and reports)."""
        raise NotImplementedError
