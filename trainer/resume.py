"""Continue a run from where a shorter one stopped: a multi-fidelity promotion trains only the steps its
rung adds (issue 17, item 1).

A ``TrainState`` holds what the loop needs to go on: the trainable tensors by name (adapters and the
task's heads), the optimizer's state, the optimizer steps done and the training micro-batches
consumed. The base weights are not in it: a run rebuilds them from the task and seed as usual.

The continuation is a warm restart (Loshchilov & Hutter, "SGDR", ICLR 2017): the added steps get their
own warmup and cosine decay, so every rung's result is read at a decayed learning rate, as a run of
that length from scratch is; the data stream goes on after the batches the shorter run consumed, and
the optimizer's moments carry over. Measured against training from scratch in ``bench/bench_resume.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ranktune.trainer.errors import TrainingError

FORMAT = 1  # bump when the layout changes; an old state is refused with a clear error
MAX_STATE_BYTES = 256 * 2**20  # refuse to unpickle more than this from a server or a file


@dataclass
class TrainState:
    steps: int  # optimizer steps done
    batches: int  # training micro-batches consumed from the task's stream
    tensors: dict[str, torch.Tensor]  # trainable parameters by name, on the CPU
    optimizer: dict[str, Any]  # torch.optim.Optimizer.state_dict()

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        payload = {"format": FORMAT, "steps": self.steps, "batches": self.batches,
                   "tensors": self.tensors, "optimizer": self.optimizer}  # fmt: skip
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        """Read a state written by ``to_bytes`` (tensors and plain containers only: ``weights_only``)."""
        if len(data) > MAX_STATE_BYTES:
            raise TrainingError(f"resume: the state is {len(data):,} bytes, over the limit", field="resume")
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated upload, another file, a pickle of something else
            raise TrainingError(f"resume: not a ranktune training state ({e})", field="resume") from e
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
            message = f"resume: state format {found!r}, this trainer reads {FORMAT}"
            raise TrainingError(message, field="resume")
        return cls(int(payload["steps"]), int(payload["batches"]), payload["tensors"], payload["optimizer"])


def capture(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, batches: int) -> TrainState:
    tensors = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
    state = optimizer.state_dict()
    moved = {
        index: {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
        for index, entry in state["state"].items()
    }
    return TrainState(steps, batches, tensors, {"state": moved, "param_groups": state["param_groups"]})


def restore(model: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState, total_steps: int) -> None:
    """Load ``state`` into a freshly built ``model`` and its ``optimizer``; refuse one from another
    schedule, model or method, or one that already went ``total_steps`` or further."""
    if not 0 < state.steps < total_steps:
        raise TrainingError(
            f"resume: the state is at step {state.steps}; a run of {total_steps} steps can only go on "
            f"from a step between 1 and {total_steps - 1}",
            field="resume",
        )
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(trainable) != set(state.tensors):
        missing = sorted(set(trainable) - set(state.tensors))
        extra = sorted(set(state.tensors) - set(trainable))
        raise TrainingError(
            f"resume: the state was trained with other adapters (missing {missing[:3]}, "
            f"unexpected {extra[:3]})",
            field="resume",
        )
    with torch.no_grad():
        for name, param in trainable.items():
            saved = state.tensors[name]
            if saved.shape != param.shape:
                raise TrainingError(
                    f"resume: {name} is {tuple(saved.shape)} in the state, {tuple(param.shape)} here",
                    field="resume",
                )
            param.copy_(saved.to(param.device, param.dtype))
    try:
        optimizer.load_state_dict(state.optimizer)
    except (ValueError, KeyError) as e:
        raise TrainingError(f"resume: the optimizer state does not fit ({e})", field="resume") from e
