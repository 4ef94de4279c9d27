"""How a run uses its device: numeric precision, activation checkpointing and peak memory.

- ``precision``: ``auto`` runs under bf16 autocast on a CUDA device that supports bfloat16 and in
  fp32 everywhere else (the CPU included); ``fp32`` never autocasts; ``bf16`` autocasts on CUDA and on
  the CPU alike (on the CPU it saves memory for activations but is usually slower: meant for testing
  and for CPUs with bf16 instructions). Weights, adapters and optimizer state stay fp32 in every case.
- ``gradient_checkpointing``: transformers' own activation checkpointing, non-reentrant, so the
  gradients reach the adapters inside checkpointed blocks although every base weight is frozen.
- Peak memory of a run: on CUDA the most tensor memory allocated on its device
  (``torch.cuda.max_memory_allocated``, reset when the run starts); on Linux CPUs the process's peak
  resident set size during the run (its high-water mark, reset when the run starts: the interpreter,
  torch and the model's weights included); elsewhere not measured (None).
"""

from __future__ import annotations

import contextlib
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ranktune.trainer.errors import TrainingError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def resolve_precision(device: torch.device, precision: Precision) -> Literal["fp32", "bf16"]:
    """What a run on ``device`` computes in; bf16 asked of a CUDA device without it is an error."""
    import torch

    if precision == "fp32":
        return "fp32"
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if cuda_bf16 else "fp32"
    if device.type == "cuda" and not cuda_bf16:
        raise TrainingError(
            f"proxy.precision: bf16 asked for, but {device} does not support bfloat16; use fp32 or auto",
            field="proxy",
        )
    return "bf16"


def autocast(device: torch.device, precision: Literal["fp32", "bf16"]) -> AbstractContextManager[object]:
    """The context a run's forward passes (training and evaluation) run in."""
    import torch

    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def supports_checkpointing(model_class: type) -> bool:
    return bool(getattr(model_class, "supports_gradient_checkpointing", False))


def checkpointing_error(class_name: str) -> TrainingError:
    return TrainingError(
        f"proxy.gradient_checkpointing: {class_name} does not support gradient checkpointing; "
        "leave it off (or lower batch_size and use grad_accum_steps to save memory)",
        field="proxy",
    )


def check_checkpointing(config: PretrainedConfig) -> None:
    """Refuse, before any training, a model whose class cannot checkpoint its activations."""
    from ranktune.trainer.models import model_class

    cls = model_class(config)
    if not supports_checkpointing(cls):
        raise checkpointing_error(cls.__name__)


def enable_checkpointing(model: nn.Module) -> None:
    """Turn on transformers' activation checkpointing (non-reentrant) on a model about to train.

    With ``use_reentrant=False`` the recomputed blocks pass gradients on to trainable parameters
    inside them (the adapters) even when no input of the block requires a gradient.
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel) or not supports_checkpointing(type(model)):
        raise checkpointing_error(type(model).__name__)
    kwargs = {"use_reentrant": False}
    try:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as e:  # no module of the model takes the flag after all
        raise checkpointing_error(type(model).__name__) from e


class PeakMemory:
    """The peak memory of one run on ``device``: start it when the run starts, read it at the end."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.measurable = True

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:  # "5" resets the process's peak resident set size (Linux >= 4.0)
            _CLEAR_REFS.write_text("5")
        except OSError:
            self.measurable = False

    def peak_bytes(self) -> int | None:
        import torch

        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        if not self.measurable:
            return None
        try:
            match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) * 1024 if match else None
