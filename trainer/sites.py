"""Find the adapter sites of a real torch model (or of a config / spec, built on ``meta``).

A site is an ``nn.Linear`` or transformers' ``Conv1D`` (GPT-2 and its relatives), which computes the
same map with its weight stored transposed (in×out).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ranktune.search.sites import AdapterSite, LinearModule, build_sites

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D``, once transformers has loaded it (a model holding one has): finding
    out that a model has none never imports transformers, a second of start-up."""
    module = sys.modules.get("transformers.pytorch_utils")
    found = getattr(module, "Conv1D", None)
    return found if isinstance(found, type) else None


def linear_shape(module: nn.Module) -> tuple[int, int, bool] | None:
    """(in_features, out_features, fan_in_fan_out) of an adaptable linear layer; None for any other."""
    import torch
    from torch import nn

    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    conv1d = conv1d_class()
    if conv1d is not None and isinstance(module, conv1d):
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        return int(weight.shape[0]), int(weight.shape[1]), True
    return None


def linear_modules(model: nn.Module) -> list[LinearModule]:
    found: list[LinearModule] = []
    for name, module in model.named_modules():
        shape = linear_shape(module)
        if shape is not None:
            found.append((name, *shape))
    return found


def sites_of_model(model: nn.Module) -> tuple[AdapterSite, ...]:
    config = getattr(model, "config", None)
    return build_sites(linear_modules(model), getattr(config, "model_type", None))


def discover_sites(source: str | Path | nn.Module | PretrainedConfig) -> tuple[AdapterSite, ...]:
    """Every adaptable linear layer of a model instance, a config, a directory or a model spec."""
    from torch import nn
    from transformers import PretrainedConfig

    from ranktune.trainer.models import build_on_meta, load_config

    if isinstance(source, nn.Module):
        return sites_of_model(source)
    config = source if isinstance(source, PretrainedConfig) else load_config(str(source))
    return sites_of_model(build_on_meta(config))
