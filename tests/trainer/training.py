"""A few plain optimizer steps on whatever a task's model leaves trainable (its head): the losses."""

from __future__ import annotations

from typing import Any

import torch


def head_losses(task: Any, model: torch.nn.Module, steps: int, lr: float) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    stream = task.batches("train", 32, seed=0)
    losses = []
    for _ in range(steps):
        loss = task.loss(model, next(stream))
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses
