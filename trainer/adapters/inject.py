"""Apply a rank schedule to any torch model: swap each site's linear layer (``nn.Linear`` or
transformers' ``Conv1D``) for an adapter layer."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ranktune.search.schedule import RankSchedule
from ranktune.search.sites import AdapterSite
from ranktune.trainer.adapters.dmlora import DMLoraLinear
from ranktune.trainer.adapters.layer import AdapterLayer, ResizedParameter
from ranktune.trainer.adapters.lora import LoraLinear
from ranktune.trainer.adapters.options import AdapterMethod
from ranktune.trainer.errors import TrainingError
from ranktune.trainer.sites import linear_shape


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def _check_site(module: nn.Module | None, site: AdapterSite) -> nn.Module:
    if module is None:
        raise TrainingError(f"schedule: site {site.name} is not a module of this model")
    if isinstance(module, AdapterLayer):
        raise TrainingError(f"schedule: site {site.name} already carries an adapter")
    shape = linear_shape(module)
    if shape is None:
        raise TrainingError(
            f"schedule: site {site.name} is a {type(module).__name__}, not nn.Linear or Conv1D"
        )
    if shape[:2] != (site.in_features, site.out_features):
        raise TrainingError(
            f"schedule: site {site.name} is {shape[0]}→{shape[1]} in the model but "
            f"{site.in_features}→{site.out_features} in the schedule"
        )
    return module


def make_layer(
    base: nn.Module, site: AdapterSite, rank: int, schedule: RankSchedule, method: AdapterMethod
) -> AdapterLayer:
    if method.kind == "dmlora":
        return DMLoraLinear(base, site, rank, schedule.alpha, method.dmlora, method.dropout)
    return LoraLinear(base, site, rank, schedule.alpha, method.dropout)


def inject_adapters(
    model: nn.Module,
    schedule: RankSchedule,
    method: AdapterMethod | None = None,
    trainable: Iterable[str] = (),
) -> dict[str, AdapterLayer]:
    """Freeze the model (except the ``trainable`` modules, e.g. a task head) and add adapters.

    Validates every site first, so a mismatch leaves the model untouched.
    """
    method = method or AdapterMethod()
    modules = dict(model.named_modules())
    bases = {site.name: _check_site(modules.get(site.name), site) for site, _ in schedule.active()}
    for param in model.parameters():
        param.requires_grad_(False)
    for name in trainable:
        for param in model.get_submodule(name).parameters():
            param.requires_grad_(True)
    layers: dict[str, AdapterLayer] = {}
    for site, rank in schedule.active():
        layer = make_layer(bases[site.name], site, rank, schedule, method)
        parent, child = _parent(model, site.name)
        setattr(parent, child, layer)
        layers[site.name] = layer
    return layers


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterLayer)}


def merge_adapters(model: nn.Module) -> None:
    for layer in adapter_layers(model).values():
        layer.merge()


def unmerge_adapters(model: nn.Module) -> None:
    for layer in adapter_layers(model).values():
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back in its place.

    Merging alone keeps the wrapper, whose forward still checks its state on every call; unloaded,
    inference runs exactly the base model's modules with the merged weights. Returns ``model``.
    """
    for name, layer in adapter_layers(model).items():
        layer.merge()
        parent, child = _parent(model, name)
        setattr(parent, child, layer.base_layer)
    return model


def effective_schedule(model: nn.Module, template: RankSchedule) -> RankSchedule:
    """The ranks the model carries now (DMLoRA pruning and resizes included), on the template's sites."""
    ranks = {name: layer.rank for name, layer in adapter_layers(model).items()}
    return RankSchedule.from_mapping(template.sites, ranks, template.alpha)


def apply_resizes(optimizer: torch.optim.Optimizer | None, records: list[ResizedParameter]) -> None:
    """Swap resized parameters into the optimizer, with moments of the new shape (padded or restarted)."""
    if optimizer is None:
        return
    for record in records:
        for group in optimizer.param_groups:
            group["params"] = [record.new if p is record.old else p for p in group["params"]]
        state = optimizer.state.pop(record.old, None)
        if not state:
            continue
        optimizer.state[record.new] = {
            key: record.transform(value) if isinstance(value, torch.Tensor) and value.dim() > 0 else value
            for key, value in state.items()
        }


def resize_adapters(
    model: nn.Module,
    schedule: RankSchedule,
    method: AdapterMethod,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[ResizedParameter]:
    """Move the model to ``schedule``'s ranks during training; new sites join the optimizer."""
    layers = adapter_layers(model)
    records: list[ResizedParameter] = []
    new_params: list[nn.Parameter] = []
    for site, rank in zip(schedule.sites, schedule.ranks, strict=True):
        if site.name in layers:
            records += layers[site.name].resize(rank)
        elif rank > 0:
            base = _check_site(model.get_submodule(site.name), site)
            layer = make_layer(base, site, rank, schedule, method)
            parent, child = _parent(model, site.name)
            setattr(parent, child, layer)
            new_params += [
                p for n, p in layer.named_parameters() if p.requires_grad and "base_layer" not in n
            ]
    apply_resizes(optimizer, records)
    if optimizer is not None and new_params:
        group = next(
            (g for g in optimizer.param_groups if g.get("name") == "adapters"), optimizer.param_groups[0]
        )
        group["params"].extend(new_params)
    return records
