"""The proxy fine-tune: one function from (task, schedule, method, settings) to a measured result.

A full-length run is the same function with more steps. The loop is deliberately plain: seed,
build, inject, then ``steps`` explicit optimizer steps with warmup + cosine learning rate, an
evaluation every ``eval_every`` steps, and a callback that may answer "stop" or "resize".
On CPU the run is bit-for-bit repeatable for a fixed seed; on CUDA it runs under bf16 autocast
(``precision``, see ``trainer.runtime``).

For larger models: an optimizer step may accumulate the gradients of ``grad_accum_steps``
micro-batches of ``batch_size`` (a step is still one optimizer step: the learning rate, evaluations,
DMLoRA's schedule and dynamic checkpoints count those), ``gradient_checkpointing`` recomputes
activations in the backward pass, and ``max_seq_len`` cuts the task's text.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ranktune.search.paired import binomial_se, encodable, encode_outcomes, is_rate, outcomes_se
from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters import AdapterMethod
from ranktune.trainer.adapters.dmlora import DMLoraController, DMLoraLinear
from ranktune.trainer.adapters.inject import (
    adapter_layers,
    apply_resizes,
    effective_schedule,
    inject_adapters,
    resize_adapters,
)
from ranktune.trainer.errors import TrainingError
from ranktune.trainer.resume import TrainState, capture, restore
from ranktune.trainer.runtime import (
    PRECISIONS,
    PeakMemory,
    Precision,
    autocast,
    enable_checkpointing,
    resolve_precision,
)
from ranktune.trainer.tasks.base import Batch, Task


@dataclass(frozen=True)
class ProxySettings:
    steps: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    eval_every: int = 0  # 0: evaluate only at the end
    eval_batch_size: int = 256
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    checkpoints: tuple[int, ...] = ()  # extra steps that evaluate and call the callback (dynamic mode)
    grad_accum_steps: int = 1  # micro-batches of batch_size per optimizer step
    gradient_checkpointing: bool = False
    max_seq_len: int | None = None  # None: the task's default
    precision: Precision = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_batch_size", "grad_accum_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TrainingError(
                    f"proxy.{name}: must be a whole number >= 1, got {value!r}", field="proxy"
                )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise TrainingError(f"proxy.lr: must be a positive number, got {self.lr!r}", field="proxy")
        if self.eval_every < 0:
            raise TrainingError("proxy.eval_every: must be >= 0", field="proxy")
        length = self.max_seq_len
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise TrainingError(
                f"proxy.max_seq_len: must be a whole number >= 1 or unset, got {self.max_seq_len!r}",
                field="proxy",
            )
        if self.precision not in PRECISIONS:
            raise TrainingError(
                f"proxy.precision: must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
                field="proxy",
            )
        if not isinstance(self.gradient_checkpointing, bool):
            raise TrainingError(
                f"proxy.gradient_checkpointing: must be true or false, got {self.gradient_checkpointing!r}",
                field="proxy",
            )


@dataclass(frozen=True)
class Measurement:
    """One point of the learning curve: training loss (mean since the last point) and val metric."""

    step: int
    loss: float
    metric: float | None = None


@dataclass(frozen=True)
class Checkpoint:
    """What the callback sees at an evaluation point."""

    step: int
    total_steps: int
    loss: float
    metric: float
    model: nn.Module

    def site_statistics(self) -> dict[str, dict[str, float]]:
        """Per-site adapter statistics (‖ΔW‖_F and rank) for dynamic re-allocation."""
        stats = {}
        with torch.no_grad():
            for name, layer in adapter_layers(self.model).items():
                norm = float(torch.linalg.matrix_norm(layer.delta_weight().float())) if layer.rank else 0.0
                stats[name] = {"delta_norm": norm, "rank": float(layer.rank)}
        return stats


@dataclass(frozen=True)
class Stop:
    reason: str = "stopped by callback"


@dataclass(frozen=True)
class Resize:
    schedule: RankSchedule


Directive = Stop | Resize | None
Callback = Callable[[Checkpoint], Directive]


@dataclass
class ProxyResult:
    metric_name: str
    metric: float
    curve: list[Measurement]
    trainable_params: int
    adapter_params: int
    steps_done: int
    wall_time_s: float
    peak_memory_bytes: int | None  # see trainer.runtime: CUDA tensors, or the process's RSS on Linux
    device: str
    stopped: str | None = None
    timeline: list[tuple[int, RankSchedule]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    outcomes: np.ndarray | None = field(default=None, repr=False, compare=False)  # of the last evaluation
    # Every metric of the final evaluation (the objective ``metric_name`` and the task's others);
    # empty when training stopped early.
    metrics: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"  # what the forward passes computed in ("bf16": under autocast)
    resumed_from: int = 0  # the step it went on from (``start``); it trained steps_done - resumed_from
    state: TrainState | None = field(default=None, repr=False, compare=False)  # with ``keep_state``

    @property
    def examples(self) -> int:
        return 0 if self.outcomes is None else len(self.outcomes)

    @property
    def metric_se(self) -> float | None:
        """Standard error of ``metric`` over the evaluated examples (binomial for a rate)."""
        if self.outcomes is None or not self.examples:
            return None
        if is_rate(self.outcomes):
            return binomial_se(self.metric, self.examples)
        se = outcomes_se(self.outcomes)
        return se if math.isfinite(se) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric_name": self.metric_name,
            "metric": self.metric,
            "curve": [vars(m) for m in self.curve],
            "trainable_params": self.trainable_params,
            "adapter_params": self.adapter_params,
            "steps_done": self.steps_done,
            "wall_time_s": self.wall_time_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "device": self.device,
            "stopped": self.stopped,
            "timeline": [{"step": step, "schedule": s.to_json()} for step, s in self.timeline],
            "examples": self.examples,
            "metric_se": self.metric_se,
            "outcomes": (
                encode_outcomes(self.outcomes)
                if self.outcomes is not None and encodable(self.outcomes)
                else None
            ),
            "metrics": dict(self.metrics),
            "resumed_from": self.resumed_from,
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device: {device!r} asked for, but CUDA is not available", field="device")
    return resolved


def lr_factor(step: int, settings: ProxySettings, start: int = 0) -> float:
    """The learning rate's factor at 0-based ``step``: warmup, then cosine to 0 at ``settings.steps``.
    A run that goes on from ``start`` (``trainer.resume``) warms up and decays over its own steps."""
    step, length = step - start, settings.steps - start
    warmup = max(1, int(settings.warmup_fraction * length))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, length - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(
    model: nn.Module, task: Task, method: AdapterMethod, settings: ProxySettings
) -> torch.optim.Optimizer:
    heads = {id(p) for name in task.head_modules for p in model.get_submodule(name).parameters()}
    scalars = [
        layer.layer_scale for layer in adapter_layers(model).values() if isinstance(layer, DMLoraLinear)
    ]
    scalar_ids = {id(p) for p in scalars}
    adapters = [p for p in model.parameters() if p.requires_grad and id(p) not in heads | scalar_ids]
    groups: list[dict[str, Any]] = [{"params": adapters, "name": "adapters", "base_lr": settings.lr}]
    if heads:
        head_params = [p for p in model.parameters() if id(p) in heads]
        groups.append({"params": head_params, "name": "heads", "base_lr": settings.lr})
    if scalars:
        groups.append({"params": scalars, "name": "scalars", "base_lr": method.dmlora.scalar_lr})
    for group in groups:
        group["lr"] = group["base_lr"]
    return torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)


def _on(device: torch.device, batch: Batch) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def train_step(
    task: Task,
    model: nn.Module,
    micro_batches: list[Batch],
    device: torch.device,
    in_precision: contextlib.AbstractContextManager[object],
    step: int,
) -> float:
    """Forward and backward over one optimizer step's micro-batches; returns the step's loss.

    One micro-batch: its loss as it is. Several: each loss is weighted by the terms it averages over
    (``Task.loss_items``: examples, or trained tokens), so the summed gradient and the returned loss
    are those of one batch holding all of them.
    """
    weights = [1.0]
    if len(micro_batches) > 1:
        items = [task.loss_items(batch) for batch in micro_batches]
        total = sum(items)
        weights = [n / total for n in items] if total > 0 else [1.0 / len(items)] * len(items)
    step_loss = 0.0
    for batch, weight in zip(micro_batches, weights, strict=True):
        with in_precision:
            loss = task.loss(model, _on(device, batch))
        if not torch.isfinite(loss):
            raise TrainingError(
                f"training diverged at step {step} (loss {float(loss)}); lower proxy.lr", field="proxy"
            )
        (loss * weight if len(micro_batches) > 1 else loss).backward()
        step_loss += float(loss.detach()) * weight
    return step_loss


def proxy_finetune(
    task: Task,
    schedule: RankSchedule | None,
    method: AdapterMethod | None = None,
    settings: ProxySettings | None = None,
    device: str = "cpu",
    callback: Callback | None = None,
    on_step: Callable[[int, float], None] | None = None,
    eval_split: Literal["val", "test"] = "val",
    stop_requested: Callable[[], str | None] | None = None,
    objective: str | None = None,
    start: TrainState | None = None,
    keep_state: bool = False,
) -> ProxyResult:
    """Fine-tune ``task``'s model with adapters per ``schedule`` (``None``: full fine-tuning baseline).

    ``callback`` runs at every evaluation and may answer ``Stop`` or ``Resize``; ``stop_requested``
    is polled before every step (a preempted worker stops within one step); ``on_step`` sees the loss.
    ``objective`` (default: the task's ``metric``) is the metric of every evaluation, the curve and
    the result; the final evaluation also measures the task's other metrics (``ProxyResult.metrics``).
    ``start`` goes on from a shorter run's state (``trainer.resume``: a warm restart over the added
    steps); ``keep_state`` returns this run's state in the result, for a longer run to go on from.
    """
    method = method or AdapterMethod()
    settings = settings or ProxySettings()
    objective = objective or task.metric
    directions = task.metric_directions()
    if objective not in directions:
        raise TrainingError(
            f"objective.metric: {task.name} reports {', '.join(directions)}, not {objective!r}",
            field="objective",
        )
    target = resolve_device(device)
    computes_in = resolve_precision(target, settings.precision)
    task.set_max_seq_len(settings.max_seq_len)
    began = time.perf_counter()
    seed_everything(settings.seed)
    memory = PeakMemory(target)
    memory.start()
    model = task.build_model()
    if schedule is None:
        for param in model.parameters():
            param.requires_grad_(True)
    else:
        inject_adapters(model, schedule, method, trainable=task.head_modules)
    if settings.gradient_checkpointing:
        enable_checkpointing(model)
    model.to(target)
    optimizer = build_optimizer(model, task, method, settings)
    dmlora = [layer for layer in adapter_layers(model).values() if isinstance(layer, DMLoraLinear)]
    controller = DMLoraController(dmlora, method.dmlora, settings.steps) if dmlora else None
    first = 0 if start is None else start.steps
    if start is not None:
        if controller is not None:
            message = "resume: a DMLoRA run follows its own schedule and cannot go on"
            raise TrainingError(message, field="resume")
        restore(model, optimizer, start, settings.steps)
    in_precision = autocast(target, computes_in)
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_count = effective_schedule(model, schedule).parameter_count if schedule is not None else 0
    trainable_count = sum(p.numel() for p in trainable)
    curve: list[Measurement] = []
    timeline = [(0, schedule)] if schedule is not None else []
    stopped: str | None = None
    losses: list[float] = []
    stream = task.batches("train", settings.batch_size, settings.seed)
    consumed = 0 if start is None else start.batches
    for _ in range(consumed):  # the shorter run's batches: go on with the data it did not see
        next(stream)
    model.train()
    step = first
    metric = float("nan")
    outcomes: torch.Tensor | None = None
    final_metrics: dict[str, float] = {}
    for step in range(first + 1, settings.steps + 1):
        reason = stop_requested() if stop_requested is not None else None
        if reason:
            stopped, step = reason, step - 1
            break
        if controller is not None:
            apply_resizes(optimizer, controller.on_step(step - 1, optimizer))
        factor = lr_factor(step - 1, settings, first)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * group.get("lr_scale", 1.0) * factor
        micro_batches = [next(stream) for _ in range(settings.grad_accum_steps)]
        consumed += len(micro_batches)
        losses.append(train_step(task, model, micro_batches, target, in_precision, step))
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if settings.max_grad_norm > 0 and params:
            nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step is not None:
            on_step(step, losses[-1])
        at_eval = (
            step == settings.steps
            or (settings.eval_every and step % settings.eval_every == 0)
            or step in settings.checkpoints
        )
        if not at_eval:
            continue
        with in_precision:
            outcomes = task.metric_outcomes(model, objective, eval_split, settings.eval_batch_size)
        if outcomes.numel() == 0:
            raise TrainingError(f"task: the {eval_split} split is empty", field="task")
        metric = float(outcomes.float().mean())
        if step == settings.steps:
            final_metrics = {objective: metric}
            for name in (n for n in directions if n != objective):
                with in_precision:
                    other = task.metric_outcomes(model, name, eval_split, settings.eval_batch_size)
                final_metrics[name] = float(other.float().mean())
        model.train()
        curve.append(Measurement(step, sum(losses) / len(losses), metric))
        losses = []
        directive = (
            callback(Checkpoint(step, settings.steps, curve[-1].loss, metric, model)) if callback else None
        )
        if isinstance(directive, Stop):
            stopped = directive.reason
            break
        if isinstance(directive, Resize) and step < settings.steps:
            resize_adapters(model, directive.schedule, method, optimizer)
            timeline.append((step, directive.schedule))
    if controller is not None:
        controller.finish()
    model.eval()
    return ProxyResult(
        metric_name=objective,
        metric=metric,
        curve=curve,
        trainable_params=trainable_count,
        adapter_params=adapter_count,
        steps_done=step,
        wall_time_s=time.perf_counter() - began,
        peak_memory_bytes=memory.peak_bytes(),
        device=str(target),
        stopped=stopped,
        timeline=timeline,
        outcomes=outcomes.numpy() if outcomes is not None else None,
        model=model,
        metrics=final_metrics,
        precision=computes_in,
        resumed_from=first,
        state=capture(model, optimizer, step, consumed) if keep_state and stopped is None else None,
    )
