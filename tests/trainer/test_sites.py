"""Adapter sites of real (tiny, offline) transformers models of every supported architecture."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ranktune.search.sites import SiteHeuristicWarning
from ranktune.trainer.sites import discover_sites
from tests.tiny_models import TINY_MODELS

# tower → number of sites, and the kinds found there
EXPECTED = {
    "llava": {"vision": (12, {"q", "k", "v", "o", "fc1", "fc2"}), "projector": (2, {"fc1", "fc2"}),
              "language": (21, {"q", "k", "v", "o", "gate", "up", "down"})},
    "idefics3": {"vision": (12, {"q", "k", "v", "o", "fc1", "fc2"}), "projector": (1, {"proj"}),
                 "language": (21, {"q", "k", "v", "o", "gate", "up", "down"})},
    "qwen2_vl": {"vision": (8, {"qkv", "o", "fc1", "fc2"}), "projector": (2, {"fc1", "fc2"}),
                 "language": (14, {"q", "k", "v", "o", "gate", "up", "down"})},
    "llama": {"language": (21, {"q", "k", "v", "o", "gate", "up", "down"})},
    "gemma3": {"language": (14, {"q", "k", "v", "o", "gate", "up", "down"})},
    "gpt2": {"language": (8, {"qkv", "o", "fc1", "fc2"})},  # transformers' Conv1D, not nn.Linear
    "bert": {"language": (12, {"q", "k", "v", "o", "fc1", "fc2"})},
    "vit": {"vision": (12, {"q", "k", "v", "o", "fc1", "fc2"})},
}  # fmt: skip
HEADS = ("lm_head", "classifier", "pooler", "embed")


@pytest.fixture(scope="module", params=sorted(TINY_MODELS))
def arch(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    torch.manual_seed(0)
    return request.param, TINY_MODELS[request.param]()


def test_towers_kinds_and_counts(arch: tuple[str, nn.Module]) -> None:
    name, model = arch
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteHeuristicWarning)  # known architectures never guess
        sites = discover_sites(model)
    by_tower = Counter(s.tower for s in sites)
    for tower, (count, kinds) in EXPECTED[name].items():
        assert by_tower[tower] == count, tower
        assert {s.kind for s in sites if s.tower == tower} == kinds
    assert set(by_tower) == set(EXPECTED[name])


def test_sites_match_the_real_modules(arch: tuple[str, nn.Module]) -> None:
    _, model = arch
    modules = dict(model.named_modules())
    for site in discover_sites(model):
        module = modules[site.name]
        if site.fan_in_fan_out:  # GPT-2's Conv1D: the same map, its weight stored in×out
            assert type(module) is Conv1D
            assert tuple(module.weight.shape) == (site.in_features, site.out_features)
        else:
            assert isinstance(module, nn.Linear)
            assert (module.in_features, module.out_features) == (site.in_features, site.out_features)
        assert not any(head in site.name for head in HEADS)
        if site.tower == "projector":
            assert site.layer is None
        else:
            assert f".{site.layer}." in site.name


def test_meta_build_from_config_and_directory_match_the_instance(arch, tmp_path) -> None:
    _, model = arch
    model.config.architectures = [type(model).__name__]
    from_instance = discover_sites(model)
    assert discover_sites(model.config) == from_instance
    model.config.save_pretrained(tmp_path)
    assert discover_sites(str(tmp_path)) == from_instance


def test_layer_indices_cover_every_layer() -> None:
    sites = discover_sites(TINY_MODELS["llava"]())
    assert sorted({s.layer for s in sites if s.tower == "language"}) == [0, 1, 2]
    assert sorted({s.layer for s in sites if s.tower == "vision"}) == [0, 1]


def test_builtin_tiny_vlm_is_small_and_fully_sited() -> None:
    from transformers import LlavaForConditionalGeneration

    from ranktune.trainer.builtin.tiny_vlm import tiny_vlm_config

    model = LlavaForConditionalGeneration(tiny_vlm_config())
    assert sum(p.numel() for p in model.parameters()) <= 5_000_000
    sites = discover_sites("builtin:tiny-vlm")
    assert Counter(s.tower for s in sites) == {"vision": 24, "projector": 2, "language": 28}
    assert sites == discover_sites(model)


def test_builtin_minilm_is_the_real_pretrained_config() -> None:
    sites = discover_sites("builtin:minilm")
    assert len(sites) == 36 and {s.in_features for s in sites} == {384, 1536}


def test_unknown_module_tree_falls_back_with_a_warning() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mixer = nn.Linear(8, 8)
            self.q_proj = nn.Linear(8, 8)

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])
            self.head = nn.Linear(8, 2)

    with pytest.warns(SiteHeuristicWarning):
        sites = discover_sites(Custom())
    assert [(s.layer, s.kind) for s in sites] == [(0, "mixer"), (0, "q"), (1, "mixer"), (1, "q")]


@pytest.mark.parametrize("spec", ["builtin:nope", "/no/such/dir", "no-such-org/no-such-model"])
def test_unresolvable_models_name_the_model_field(spec: str) -> None:
    from ranktune.search.errors import SiteError

    with pytest.raises(SiteError, match="model"):
        discover_sites(spec)


def test_planning_a_500_site_model_takes_under_a_second() -> None:
    import time

    import transformers as T

    from ranktune.search.schedule import Budget
    from ranktune.search.space import HierarchicalSpace

    config = T.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=72,
                           num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)  # fmt: skip
    discover_sites(T.LlamaConfig(num_hidden_layers=1))  # imports are not planning
    start = time.perf_counter()
    sites = discover_sites(config)
    space = HierarchicalSpace(sites, Budget.from_rank(sites, 8))
    schedule = space.random(0)
    elapsed = time.perf_counter() - start
    assert len(sites) == 504 and space.budget.admits(schedule.parameter_count)
    assert elapsed < 1.0
