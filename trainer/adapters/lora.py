"""Plain LoRA: ΔW = scaling(r)·B·A with A ∈ R^{r×in} (Kaiming init) and B ∈ R^{out×r} (zeros)."""

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


class LoraLinear(AdapterLayer):
    def __init__(
        self, base_layer: nn.Module, site: AdapterSite, rank: int, alpha: AlphaRule, dropout: float = 0.0
    ) -> None:
        super().__init__(base_layer, site, alpha)
        weight = self.base_weight
        self.lora_A = nn.Parameter(init_down(rank, site.in_features, weight))
        self.lora_B = nn.Parameter(
            torch.zeros(site.out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def rank(self) -> int:
        return int(self.lora_A.shape[0])

    @property
    def scaling(self) -> float:
        return self.alpha.scaling_for(self.rank)

    def update(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x).to(self.lora_A.dtype)
        return nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B) * self.scaling

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self.lora_A, self.lora_B, self.scaling

    @torch.no_grad()
    def resize(self, new_rank: int) -> list[ResizedParameter]:
        if self.merged:
            raise RuntimeError(f"{self.site.name}: unmerge before resizing")
        old_rank, old_scale = self.rank, self.scaling
        if new_rank == old_rank:
            return []
        new_scale = self.alpha.scaling_for(new_rank)
        if new_rank > old_rank:
            extra = init_down(new_rank - old_rank, self.site.in_features, self.lora_A)
            new_a = torch.cat([self.lora_A.data, extra])
            # New B columns are zero; old ones absorb a rank-dependent scale change (rsLoRA).
            factor = old_scale / new_scale if old_rank else 1.0
            new_b = torch.cat(
                [
                    self.lora_B.data * factor,
                    self.lora_B.new_zeros(self.site.out_features, new_rank - old_rank),
                ],
                1,
            )
            transforms = (pad_state(new_a.shape, 0), pad_state(new_b.shape, 1))
        else:
            new_a, new_b, _ = truncated_factors(self.lora_A.data, self.lora_B.data, old_scale, new_rank)
            if new_rank:
                new_b = new_b / new_scale
            transforms = (reset_state(new_a.shape), reset_state(new_b.shape))
        records = [
            replacement(self.lora_A, new_a, transforms[0]),
            replacement(self.lora_B, new_b, transforms[1]),
        ]
        self.lora_A, self.lora_B = records[0].new, records[1].new
        return records
