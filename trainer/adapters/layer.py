"""The adapter layer base: wraps one frozen linear layer and adds a low-rank update to it.

The base is an ``nn.Linear`` (weight out×in) or transformers' ``Conv1D`` (GPT-2; weight in×out, the
site's ``fan_in_fan_out``). Both compute x·Wᵀ + b as a map from in to out features, so the factors
(A ∈ R^{r×in}, B ∈ R^{out×r}) and the forward are the same; only merging writes ΔW transposed.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ranktune.search.schedule import AlphaRule
from ranktune.search.sites import AdapterSite
from ranktune.trainer.sites import linear_shape

# How an optimizer-state tensor of a resized parameter becomes one of the new shape.
StateTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ResizedParameter:
    """A parameter replaced by one of another shape; ``transform`` maps its optimizer moments.

    Resizing makes a new ``nn.Parameter`` rather than assigning ``.data`` of another shape:
    autograd keeps the old shape in the parameter's gradient accumulator for as long as any graph
    (e.g. the last loss) is alive, and a later backward would then fail.
    """

    old: nn.Parameter
    new: nn.Parameter
    transform: StateTransform


def replacement(old: nn.Parameter, data: torch.Tensor, transform: StateTransform) -> ResizedParameter:
    new = nn.Parameter(data.detach().contiguous(), requires_grad=old.requires_grad)
    return ResizedParameter(old, new, transform)


def reset_state(new_shape: torch.Size) -> StateTransform:
    """Moments of a re-factored parameter describe another basis: start them over."""
    return lambda old: torch.zeros(new_shape, dtype=old.dtype, device=old.device)


def pad_state(new_shape: torch.Size, dim: int) -> StateTransform:
    """Grown parameter: existing components keep their moments, new components start at zero."""

    def transform(old: torch.Tensor) -> torch.Tensor:
        new = torch.zeros(new_shape, dtype=old.dtype, device=old.device)
        new.narrow(dim, 0, old.shape[dim]).copy_(old)
        return new

    return transform


def init_down(
    rank: int, in_features: int, like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """PEFT's default LoRA A init: Kaiming-uniform with a=sqrt(5)."""
    bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
    out = torch.empty(rank, in_features, dtype=like.dtype, device=like.device)
    return out.uniform_(-bound, bound, generator=generator)


class AdapterLayer(nn.Module, ABC):
    """A frozen base linear layer plus a trainable low-rank delta ΔW, mergeable into the base."""

    def __init__(self, base_layer: nn.Module, site: AdapterSite, alpha: AlphaRule) -> None:
        super().__init__()
        shape = linear_shape(base_layer)
        if shape is None:
            raise TypeError(
                f"{site.name}: adapters wrap nn.Linear or Conv1D, not {type(base_layer).__name__}"
            )
        self.base_layer = base_layer
        self.site = site
        self.alpha = alpha
        self.merged = False
        self.fan_in_fan_out = shape[2]  # the base stores its weight in×out (Conv1D)
        self.base_weight.requires_grad_(False)
        bias = getattr(base_layer, "bias", None)
        if bias is not None:
            bias.requires_grad_(False)

    @property
    def base_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    @abstractmethod
    def rank(self) -> int:
        """Current total rank of the update."""

    @abstractmethod
    def update(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution ΔW·x for input ``x`` (training-time behaviour included)."""

    @abstractmethod
    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(A, B, scale) with ΔW = scale·B·A, the equivalent plain LoRA of rank ``self.rank``."""

    @abstractmethod
    def resize(self, new_rank: int) -> list[ResizedParameter]:
        """Grow (output unchanged) or shrink (best rank-k approximation) in place."""

    def delta_weight(self) -> torch.Tensor:
        """ΔW laid out as the base layer stores its weight: out×in, or in×out for a Conv1D."""
        a, b, scale = self.lora_factors()
        if a.shape[0] == 0:
            return torch.zeros_like(self.base_weight)
        delta = (b @ a) * scale
        return delta.T if self.fan_in_fan_out else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged or self.rank == 0:
            return out
        return out + self.update(x).to(out.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight: inference then costs exactly the base layer."""
        if not self.merged:
            weight = self.base_weight
            weight.add_(self.delta_weight().to(weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            weight = self.base_weight
            weight.sub_(self.delta_weight().to(weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"site={self.site.name}, rank={self.rank}, merged={self.merged}"


@torch.no_grad()
def truncated_factors(
    a: torch.Tensor, b: torch.Tensor, scale: float, rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of M = scale·B·A, balanced: M_k = B'·A'. Also returns all singular values.

    Uses QR of the thin factors so the SVD is only r×r, whatever the layer's width.
    """
    dtype = a.dtype
    a32, b32 = a.float(), b.float()
    q_b, r_b = torch.linalg.qr(b32)
    q_a, r_a = torch.linalg.qr(a32.T)
    core = scale * (r_b @ r_a.T)
    u, s, vh = torch.linalg.svd(core)
    root = s[:rank].sqrt()
    new_b = (q_b @ u[:, :rank]) * root
    new_a = root[:, None] * (vh[:rank] @ q_a.T)
    return new_a.to(dtype), new_b.to(dtype), s
