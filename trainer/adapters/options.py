"""Validated adapter-method options. Runtime-only state is never part of these."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ranktune.trainer.errors import MethodError


def _fraction(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise MethodError(f"method.{name}: must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True)
class DMLoraOptions:
    """Dropout-mixture LoRA (ECCV 2024): K branches, gradual branch dropout, a 2-stage learned scale.

    - ``branches``: up/down pairs per site; their ranks sum to the site's rank (same budget as LoRA).
    - ``drop_max``: the branch-drop probability rises from 0 to this value, on ``drop_schedule``,
      between ``drop_start`` and ``drop_end`` (fractions of training); a dropped branch skips
      forward and backward for that step.
    - ``prune_at``: fractions of training at which each site removes its weakest branch for good
      (smallest ‖B·A‖), never going below ``min_branches``.
    - ``stage2_at``: from this fraction on, one scalar per layer is learned (stage 2), while the
      branches train at ``stage2_branch_lr`` × the learning rate (0 freezes them). Before it the
      branches train under the global LoRA scale only (stage 1).
    """

    branches: int = 4
    drop_max: float = 0.5
    drop_start: float = 0.1
    drop_end: float = 0.6
    drop_schedule: Literal["linear", "cosine"] = "linear"
    prune_at: tuple[float, ...] = (0.5, 0.75)
    min_branches: int = 2
    stage2_at: float = 0.8
    stage2_branch_lr: float = 0.1
    scalar_lr: float = 1e-2

    def __post_init__(self) -> None:
        if not isinstance(self.branches, int) or self.branches < 1:
            raise MethodError(f"method.branches: must be a whole number >= 1, got {self.branches!r}")
        if not isinstance(self.min_branches, int) or not 1 <= self.min_branches <= self.branches:
            raise MethodError(f"method.min_branches: must be between 1 and branches ({self.branches})")
        for name in ("drop_max", "drop_start", "drop_end", "stage2_at", "stage2_branch_lr"):
            _fraction(name, getattr(self, name))
        if self.drop_max >= 1.0:
            raise MethodError("method.drop_max: must be below 1 (at least one branch always runs)")
        if self.drop_end < self.drop_start:
            raise MethodError("method.drop_end: must not come before drop_start")
        if self.drop_schedule not in ("linear", "cosine"):
            raise MethodError(f"method.drop_schedule: 'linear' or 'cosine', got {self.drop_schedule!r}")
        object.__setattr__(self, "prune_at", tuple(sorted(self.prune_at)))
        for value in self.prune_at:
            _fraction("prune_at", value)
        if not (math.isfinite(self.scalar_lr) and self.scalar_lr > 0):
            raise MethodError(f"method.scalar_lr: must be a positive number, got {self.scalar_lr!r}")

    def drop_probability(self, progress: float) -> float:
        """Branch-drop probability at ``progress`` ∈ [0, 1] of training."""
        if progress <= self.drop_start or self.drop_max == 0.0:
            return 0.0
        span = max(self.drop_end - self.drop_start, 1e-12)
        ramp = min(1.0, (progress - self.drop_start) / span)
        if self.drop_schedule == "cosine":
            ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
        return self.drop_max * ramp


@dataclass(frozen=True)
class AdapterMethod:
    kind: Literal["lora", "dmlora"] = "lora"
    dropout: float = 0.0
    dmlora: DMLoraOptions = field(default_factory=DMLoraOptions)

    def __post_init__(self) -> None:
        if self.kind not in ("lora", "dmlora"):
            raise MethodError(f"method.kind: must be 'lora' or 'dmlora', got {self.kind!r}")
        _fraction("dropout", self.dropout)
        if self.dropout >= 1.0:
            raise MethodError("method.dropout: must be below 1")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdapterMethod:
        data = dict(data)
        try:
            options = DMLoraOptions(**{**data.pop("dmlora", {})})
            if "prune_at" in data:
                raise MethodError("method.prune_at: belongs under method.dmlora")
            return cls(dmlora=options, **data)
        except TypeError as e:
            raise MethodError(f"method: unknown or malformed option ({e})") from e

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["dmlora"]["prune_at"] = list(self.dmlora.prune_at)
        return data
