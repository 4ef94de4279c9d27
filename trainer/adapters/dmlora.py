"""Dropout-mixture LoRA (DMLoRA, ECCV 2024) as a variant of the adapter layer, and its controller.

Each site holds K up/down branch pairs whose ranks sum to the site's rank, so the parameter count
equals plain LoRA's. During training whole branches are dropped with a probability that rises on a
schedule (a dropped branch costs nothing forward or backward; the rest are rescaled so the
expected update is unchanged), weak branches are removed for good at milestones, and a second
stage learns one scalar per layer. After training every remaining branch merges into the base
weight, or exports as one plain LoRA of rank Σ remaining branch ranks.
"""

from __future__ import annotations

import torch
from torch import nn

from ranktune.search.schedule import AlphaRule
from ranktune.search.sites import AdapterSite
from ranktune.trainer.adapters.layer import (
    AdapterLayer,
    ResizedParameter,
    init_down,
    pad_state,
    replacement,
    reset_state,
    truncated_factors,
)
from ranktune.trainer.adapters.options import DMLoraOptions


def split_rank(rank: int, parts: int) -> list[int]:
    """``rank`` as ``min(parts, rank)`` near-equal positive parts, larger first."""
    count = max(1, min(parts, rank))
    base, extra = divmod(rank, count)
    return [base + (1 if i < extra else 0) for i in range(count)]


class DMLoraLinear(AdapterLayer):
    def __init__(
        self, base_layer: nn.Module, site: AdapterSite, rank: int, alpha: AlphaRule, options: DMLoraOptions,
        dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__(base_layer, site, alpha)
        weight = self.base_weight
        ranks = split_rank(rank, options.branches) if rank else []
        self.lora_A = nn.ParameterList([nn.Parameter(init_down(r, site.in_features, weight)) for r in ranks])
        self.lora_B = nn.ParameterList([nn.Parameter(weight.new_zeros(site.out_features, r)) for r in ranks])
        # Stage 2's per-layer scalar; frozen (requires_grad=False) during stage 1.
        self.layer_scale = nn.Parameter(weight.new_ones(()), requires_grad=False)
        self.scale = alpha.scaling_for(rank)  # the global LoRA scale of stage 1, fixed per site
        self.drop_probability = 0.0  # runtime state, set by DMLoraController
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def active_branches(self) -> list[int]:
        return [k for k, a in enumerate(self.lora_A) if a.shape[0] > 0]

    @property
    def rank(self) -> int:
        return sum(int(a.shape[0]) for a in self.lora_A)

    def _kept(self) -> tuple[list[int], float]:
        """Branches that run this step, and the rescale keeping the expected update unchanged."""
        active = self.active_branches()
        if not self.training or self.drop_probability <= 0.0 or len(active) <= 1:
            return active, 1.0
        keep = torch.rand(len(active)) >= self.drop_probability
        if not bool(keep.any()):
            keep[int(torch.randint(len(active), ()))] = True
        kept = [k for k, flag in zip(active, keep.tolist(), strict=True) if flag]
        return kept, len(active) / len(kept)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        kept, rescale = self._kept()
        a = torch.cat([self.lora_A[k] for k in kept]) if len(kept) > 1 else self.lora_A[kept[0]]
        b = torch.cat([self.lora_B[k] for k in kept], 1) if len(kept) > 1 else self.lora_B[kept[0]]
        x = self.dropout(x).to(a.dtype)
        out = nn.functional.linear(nn.functional.linear(x, a), b)
        return out * (self.layer_scale * (self.scale * rescale))

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        active = self.active_branches()
        if not active:
            w = self.base_weight
            return w.new_zeros(0, self.site.in_features), w.new_zeros(self.site.out_features, 0), self.scale
        a = torch.cat([self.lora_A[k] for k in active])
        b = torch.cat([self.lora_B[k] for k in active], 1)
        return a, b, self.scale * float(self.layer_scale)

    @torch.no_grad()
    def branch_strength(self, k: int) -> float:
        a, b = self.lora_A[k], self.lora_B[k]
        return float(torch.linalg.matrix_norm(b.float() @ a.float())) if a.shape[0] else 0.0

    @torch.no_grad()
    def prune_weakest(self, min_branches: int) -> list[ResizedParameter]:
        """Remove the branch with the smallest ‖B·A‖ for good, keeping at least ``min_branches``."""
        active = self.active_branches()
        if len(active) <= min_branches:
            return []
        weakest = min(active, key=lambda k: (self.branch_strength(k), k))
        empty_a = self.lora_A[weakest].new_zeros(0, self.site.in_features)
        empty_b = self.lora_B[weakest].new_zeros(self.site.out_features, 0)
        return self._set_branch(weakest, empty_a, empty_b, reset=True)

    def _set_branch(self, k: int, a: torch.Tensor, b: torch.Tensor, reset: bool) -> list[ResizedParameter]:
        transforms = (
            (reset_state(a.shape), reset_state(b.shape))
            if reset
            else (pad_state(a.shape, 0), pad_state(b.shape, 1))
        )
        records = [
            replacement(self.lora_A[k], a, transforms[0]),
            replacement(self.lora_B[k], b, transforms[1]),
        ]
        self.lora_A[k], self.lora_B[k] = records[0].new, records[1].new
        return records

    @torch.no_grad()
    def resize(self, new_rank: int) -> list[ResizedParameter]:
        """Grow: extra rank spread over the active branches (zero B columns, output unchanged).
        Shrink: the best rank-k approximation of the whole update, re-split across the branches."""
        if self.merged:
            raise RuntimeError(f"{self.site.name}: unmerge before resizing")
        active = self.active_branches() or [0]
        old_rank = self.rank
        records: list[ResizedParameter] = []
        if new_rank > old_rank:
            for k, extra in zip(active, split_rank(new_rank - old_rank, len(active)), strict=False):
                a = torch.cat([self.lora_A[k].data, init_down(extra, self.site.in_features, self.lora_A[k])])
                b = torch.cat(
                    [self.lora_B[k].data, self.lora_B[k].new_zeros(self.site.out_features, extra)], 1
                )
                records += self._set_branch(k, a, b, reset=False)
        elif new_rank < old_rank:
            a_all = torch.cat([self.lora_A[k] for k in active])
            b_all = torch.cat([self.lora_B[k] for k in active], 1)
            new_a, new_b, _ = truncated_factors(a_all, b_all, 1.0, new_rank)
            parts = split_rank(new_rank, len(active)) if new_rank else []
            start = 0
            for i, k in enumerate(active):
                width = parts[i] if i < len(parts) else 0
                records += self._set_branch(
                    k, new_a[start : start + width], new_b[:, start : start + width], reset=True
                )
                start += width
        return records


class DMLoraController:
    """Drives every DMLoRA layer of a model through training: drop schedule, pruning, stage switch."""

    def __init__(self, layers: list[DMLoraLinear], options: DMLoraOptions, total_steps: int) -> None:
        self.layers = layers
        self.options = options
        self.total_steps = max(1, total_steps)
        self._pruned = 0
        self.stage = 1

    def on_step(self, step: int, optimizer: torch.optim.Optimizer) -> list[ResizedParameter]:
        """Call before each optimizer step ``step`` (0-based); returns parameters resized by pruning."""
        progress = step / self.total_steps
        p = self.options.drop_probability(progress)
        for layer in self.layers:
            layer.drop_probability = p
        records: list[ResizedParameter] = []
        while self._pruned < len(self.options.prune_at) and progress >= self.options.prune_at[self._pruned]:
            for layer in self.layers:
                records += layer.prune_weakest(self.options.min_branches)
            self._pruned += 1
        if self.stage == 1 and progress >= self.options.stage2_at:
            self._enter_stage2(optimizer)
        return records

    def _enter_stage2(self, optimizer: torch.optim.Optimizer) -> None:
        self.stage = 2
        for layer in self.layers:
            layer.layer_scale.requires_grad_(True)
            if self.options.stage2_branch_lr == 0.0:
                for param in [*layer.lora_A, *layer.lora_B]:
                    param.requires_grad_(False)
                    param.grad = None
        for group in optimizer.param_groups:
            if group.get("name") == "adapters":
                # The training loop multiplies its scheduled learning rate by ``lr_scale``.
                group["lr_scale"] = self.options.stage2_branch_lr
                group["lr"] = group["lr"] * self.options.stage2_branch_lr

    def finish(self) -> None:
        for layer in self.layers:
            layer.drop_probability = 0.0
