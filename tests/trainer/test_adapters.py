"""LoRA and DMLoRA layers on real tiny models: budget, merge, unmerge, PEFT export (a table of cases)."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel
from torch import nn

from ranktune.search.grid import RankGrid
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.space import HierarchicalSpace
from ranktune.trainer.adapters import (
    AdapterMethod,
    DMLoraOptions,
    inject_adapters,
    merge_adapters,
    merge_and_unload,
    unmerge_adapters,
)
from ranktune.trainer.adapters.dmlora import DMLoraLinear
from ranktune.trainer.adapters.export import save_peft_adapter
from ranktune.trainer.adapters.inject import adapter_layers
from ranktune.trainer.errors import TrainingError
from ranktune.trainer.sites import discover_sites
from tests.tiny_models import TINY_MODELS

GRID = RankGrid((0, 2, 4, 6, 8, 12, 16))
MODELS = ["llava", "llama", "gpt2", "bert", "vit", "qwen2_vl"]
METHODS = {
    "lora": AdapterMethod("lora"),
    "dmlora": AdapterMethod("dmlora", dmlora=DMLoraOptions(branches=3)),
}


def inputs_for(name: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    if name == "llava":
        ids = torch.cat([torch.full((2, 16), 63), torch.randint(1, 60, (2, 5), generator=g)], 1)
        return {"input_ids": ids, "pixel_values": torch.rand(2, 1, 28, 28, generator=g)}
    if name == "vit":
        return {"pixel_values": torch.rand(2, 1, 28, 28, generator=g)}
    return {"input_ids": torch.randint(1, 60, (2, 7), generator=g)}


def output_of(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits


def perturb(model: nn.Module) -> None:
    """Stand-in for training: give every adapter factor (and DMLoRA scalar) non-trivial values."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for name, param in layer.named_parameters():
                if "base_layer" not in name:
                    param.copy_(
                        torch.randn(param.shape, generator=g) * 0.2 + (0.3 if param.dim() == 0 else 0)
                    )


def planned(model: nn.Module, seed: int, alpha: AlphaRule) -> RankSchedule:
    sites = discover_sites(model)
    schedule = HierarchicalSpace(sites, Budget.from_rank(sites, 8, GRID), GRID).random(seed)
    return RankSchedule(schedule.sites, schedule.ranks, alpha)


@pytest.fixture(params=MODELS)
def case(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, TINY_MODELS[request.param]()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_budget_init_merge_unmerge(case, method: str) -> None:
    name, model = case
    inputs = inputs_for(name)
    base_out = output_of(model, inputs)
    base_weights = {k: v.clone() for k, v in model.state_dict().items()}
    schedule = planned(model, 0, AlphaRule())
    inject_adapters(model, schedule, METHODS[method])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == schedule.parameter_count
    torch.testing.assert_close(output_of(model, inputs), base_out, rtol=0, atol=1e-6)  # B starts at zero
    perturb(model)
    unmerged = output_of(model, inputs)
    assert (unmerged - base_out).abs().max() > 1e-3
    merge_adapters(model)
    torch.testing.assert_close(output_of(model, inputs), unmerged, rtol=0, atol=1e-5)
    unmerge_adapters(model)
    for key, value in model.state_dict().items():
        if key.replace(".base_layer", "") in base_weights and "lora" not in key:
            torch.testing.assert_close(value, base_weights[key.replace(".base_layer", "")], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_merge_and_unload_leaves_the_base_modules_with_merged_weights(case, method: str) -> None:
    name, model = case
    reference = copy.deepcopy(model)
    schedule = planned(model, 1, AlphaRule())
    inject_adapters(model, schedule, METHODS[method])
    perturb(model)
    inputs = inputs_for(name)
    unmerged = output_of(model, inputs)
    deltas = {site: layer.delta_weight() for site, layer in adapter_layers(model).items()}
    assert merge_and_unload(model) is model
    assert not adapter_layers(model)
    modules = dict(model.named_modules())
    assert set(modules) == set(dict(reference.named_modules())), "the base's module tree, nothing added"
    for site, delta in deltas.items():
        assert type(modules[site]) is type(reference.get_submodule(site))  # nn.Linear, or GPT-2's Conv1D
        expected = reference.get_submodule(site).weight + delta
        torch.testing.assert_close(modules[site].weight, expected, rtol=0, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    torch.testing.assert_close(output_of(model, inputs), unmerged, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("alpha", [AlphaRule("ratio", 2.0), AlphaRule("rslora", 8.0)])
def test_peft_loads_the_exported_adapter(case, method: str, alpha: AlphaRule, tmp_path) -> None:
    name, model = case
    inputs = inputs_for(name)
    pristine = copy.deepcopy(model)
    schedule = planned(model, 1, alpha)
    inject_adapters(model, schedule, METHODS[method])
    perturb(model)
    if method == "dmlora":  # export must hold after pruning a branch too
        for layer in adapter_layers(model).values():
            assert isinstance(layer, DMLoraLinear)
            layer.prune_weakest(min_branches=1)
    ours = output_of(model, inputs)
    save_peft_adapter(model, schedule, tmp_path)
    loaded = PeftModel.from_pretrained(pristine, str(tmp_path))
    torch.testing.assert_close(output_of(loaded, inputs), ours, rtol=0, atol=1e-4)


def test_dmlora_branches_split_the_rank_and_count_like_lora() -> None:
    model = TINY_MODELS["llama"]()
    schedule = planned(model, 2, AlphaRule())
    layers = inject_adapters(model, schedule, AdapterMethod("dmlora", dmlora=DMLoraOptions(branches=4)))
    for site, rank in schedule.active():
        layer = layers[site.name]
        assert isinstance(layer, DMLoraLinear)
        ranks = [a.shape[0] for a in layer.lora_A]
        assert sum(ranks) == rank and len(ranks) == min(4, rank) and max(ranks) - min(ranks) <= 1


def test_mismatched_schedule_leaves_the_model_untouched() -> None:
    llama, bert = TINY_MODELS["llama"](), TINY_MODELS["bert"]()
    schedule = planned(bert, 0, AlphaRule())
    with pytest.raises(TrainingError, match="is not a module of this model"):
        inject_adapters(llama, schedule)
    assert not adapter_layers(llama) and all(p.requires_grad for p in llama.parameters())
