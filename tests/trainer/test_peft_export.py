"""PEFT builds exactly the planned ranks and parameter counts from an exported config, per architecture."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import AdaLoraConfig, LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from ranktune.search.errors import ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.peft_format import from_peft_config, to_peft_config
from ranktune.search.schedule import AlphaRule, Budget, RankSchedule
from ranktune.search.space import HierarchicalSpace
from ranktune.trainer.sites import discover_sites
from tests.tiny_models import TINY_MODELS

GRID = RankGrid((0, 2, 4, 6, 8, 12, 16))


def lora_config(schedule: RankSchedule) -> LoraConfig:
    config = to_peft_config(schedule)
    assert config.pop("peft_type") == "LORA"
    return LoraConfig(**config)


def built_ranks(model: nn.Module, schedule: RankSchedule) -> tuple[dict[str, int], dict[str, float], int]:
    peft_model = get_peft_model(copy.deepcopy(model), lora_config(schedule))
    ranks, scalings = {}, {}
    for name, module in peft_model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.r:
            ranks[name] = module.r["default"]
            scalings[name] = module.scaling["default"]
            assert module.lora_A["default"].weight.shape[0] == module.r["default"]
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return ranks, scalings, trainable


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def arch(request: pytest.FixtureRequest):
    torch.manual_seed(0)
    model = TINY_MODELS[request.param]()
    sites = discover_sites(model)
    return model, sites, HierarchicalSpace(sites, Budget.from_rank(sites, 8, GRID), GRID)


@pytest.mark.parametrize("which", ["uniform", "random0", "random1"])
@pytest.mark.parametrize("alpha", [AlphaRule("ratio", 2.0), AlphaRule("rslora", 16.0)])
def test_peft_reproduces_schedule(arch, which: str, alpha: AlphaRule) -> None:
    model, _, space = arch
    schedule = space.uniform() if which == "uniform" else space.random(int(which[-1]))
    schedule = RankSchedule(schedule.sites, schedule.ranks, alpha)
    ranks, scalings, trainable = built_ranks(model, schedule)
    assert ranks == {site.name: rank for site, rank in schedule.active()}
    assert trainable == schedule.parameter_count
    for name, rank in ranks.items():
        assert scalings[name] == pytest.approx(alpha.scaling_for(rank))


def test_export_import_round_trip(arch) -> None:
    _, sites, space = arch
    for seed in range(3):
        schedule = space.random(seed)
        assert from_peft_config(to_peft_config(schedule), sites) == schedule


def test_handwritten_lora_config_imports_as_peft_builds_it() -> None:
    model = TINY_MODELS["llama"]()
    sites = discover_sites(model)
    config = {"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"], "r": 4, "lora_alpha": 8,
              "rank_pattern": {"layers.1.self_attn.q_proj": 12}}  # fmt: skip
    schedule = from_peft_config(config, sites)
    peft_model = get_peft_model(
        copy.deepcopy(model), LoraConfig(**{k: v for k, v in config.items() if k != "peft_type"})
    )
    built = {
        n: m.r["default"] for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer)
    }
    assert built == {s.name: r for s, r in schedule.active()}
    assert schedule.rank_of("model.layers.1.self_attn.q_proj") == 12
    assert schedule.alpha == AlphaRule("ratio", 2.0)


def test_adalora_rank_pattern_imports_the_allocated_ranks() -> None:
    model = TINY_MODELS["llama"]()
    sites = discover_sites(model)
    config = AdaLoraConfig(
        target_modules=["q_proj", "v_proj"], init_r=6, target_r=4, lora_alpha=8, total_step=10
    )
    peft_model = get_peft_model(copy.deepcopy(model), config)
    # An AdaLoRA run keeps a boolean mask per lora_E; PEFT resizes the modules from it.
    keep = {}
    for i, (name, param) in enumerate(peft_model.base_model.model.named_parameters()):
        if "lora_E" in name:
            keep[name.replace(".default", "")] = [j <= i % 6 for j in range(param.shape[0])]
    peft_model.base_model.resize_modules_by_rank_pattern(keep, "default")
    built = {
        n: m.r["default"] for n, m in peft_model.base_model.model.named_modules() if hasattr(m, "lora_E")
    }
    exported = {**config.to_dict(), "peft_type": "ADALORA", "rank_pattern": keep}
    schedule = from_peft_config(exported, sites)
    assert {s.name: r for s, r in schedule.active()} == {n: r for n, r in built.items() if r > 0}
    assert set(built.values()) != {6}, "the allocation must change some ranks for the test to mean anything"


def test_target_that_matches_no_site_is_an_error() -> None:
    sites = discover_sites(TINY_MODELS["llama"]())
    with pytest.raises(ScheduleError, match="lm_head"):
        from_peft_config({"target_modules": ["lm_head"], "r": 8}, sites)
