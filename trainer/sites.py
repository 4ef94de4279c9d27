"""Find the adapter sites of a real torch model (or of a config / spec, built on ``meta``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ranktune.search.sites import AdapterSite, build_sites

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig


def linear_modules(model: nn.Module) -> list[tuple[str, int, int]]:
    from torch import nn

    return [
        (name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    ]


def sites_of_model(model: nn.Module) -> tuple[AdapterSite, ...]:
    config = getattr(model, "config", None)
    return build_sites(linear_modules(model), getattr(config, "model_type", None))


def discover_sites(source: str | Path | nn.Module | PretrainedConfig) -> tuple[AdapterSite, ...]:
    """Every adaptable ``nn.Linear`` of a model instance, a config, a directory or a model spec."""
    from torch import nn
    from transformers import PretrainedConfig

    from ranktune.trainer.models import build_on_meta, load_config

    if isinstance(source, nn.Module):
        return sites_of_model(source)
    config = source if isinstance(source, PretrainedConfig) else load_config(str(source))
    return sites_of_model(build_on_meta(config))
