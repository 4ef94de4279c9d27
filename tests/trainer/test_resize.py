"""Rank resizing during training: grow keeps the output, shrink is the best rank-k approximation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ranktune.search.schedule import AlphaRule, RankSchedule
from ranktune.search.sites import AdapterSite
from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions
from ranktune.trainer.adapters.dmlora import DMLoraLinear
from ranktune.trainer.adapters.inject import adapter_layers, apply_resizes, inject_adapters, resize_adapters
from ranktune.trainer.adapters.layer import AdapterLayer
from ranktune.trainer.adapters.lora import LoraLinear

SITE = AdapterSite("proj", "language", 0, "q", 24, 20)
ALPHAS = [AlphaRule("ratio", 2.0), AlphaRule("rslora", 4.0)]


def trained_layer(kind: str, rank: int, alpha: AlphaRule) -> AdapterLayer:
    torch.manual_seed(0)
    base = nn.Linear(24, 20)
    layer: AdapterLayer
    if kind == "lora":
        layer = LoraLinear(base, SITE, rank, alpha)
    else:
        layer = DMLoraLinear(base, SITE, rank, alpha, DMLoraOptions(branches=3))
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "lora_B" in name:
                p.normal_()
    return layer


@pytest.mark.parametrize("kind", ["lora", "dmlora"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_grow_keeps_the_output(kind: str, alpha: AlphaRule) -> None:
    layer = trained_layer(kind, 4, alpha)
    x = torch.randn(5, 24)
    before = layer(x)
    layer.resize(10)
    assert layer.rank == 10
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["lora", "dmlora"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_shrink_error_is_the_svd_tail(kind: str, alpha: AlphaRule) -> None:
    layer = trained_layer(kind, 8, alpha)
    before = layer.delta_weight().detach().clone()
    singular = torch.linalg.svdvals(before)
    layer.resize(3)
    assert layer.rank == 3
    after = layer.delta_weight().detach()
    assert torch.linalg.matrix_rank(after) == 3
    error = torch.linalg.matrix_norm(before - after)
    tail = singular[3:].pow(2).sum().sqrt()
    torch.testing.assert_close(error, tail, rtol=1e-4, atol=1e-5)


def test_optimizer_moments_follow_a_resize() -> None:
    layer = trained_layer("lora", 4, AlphaRule())
    assert isinstance(layer, LoraLinear)
    params = [layer.lora_A, layer.lora_B]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    x = torch.randn(8, 24)
    for _ in range(3):
        optimizer.zero_grad()
        layer(x).pow(2).mean().backward()
        optimizer.step()
    old_avg = optimizer.state[layer.lora_B]["exp_avg"].clone()
    apply_resizes(optimizer, layer.resize(6))
    grown = optimizer.state[layer.lora_B]["exp_avg"]
    assert grown.shape == (20, 6)
    torch.testing.assert_close(grown[:, :4], old_avg)
    assert grown[:, 4:].abs().sum() == 0
    apply_resizes(optimizer, layer.resize(2))
    assert optimizer.state[layer.lora_A]["exp_avg"].shape == (2, 24)
    assert optimizer.state[layer.lora_A]["exp_avg_sq"].abs().sum() == 0  # new basis, fresh moments
    optimizer.zero_grad()
    layer(x).pow(2).mean().backward()
    optimizer.step()  # the optimizer keeps working on the resized parameters


def test_resize_a_model_to_a_new_schedule_adds_and_removes_sites() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 8))
    sites = (AdapterSite("0", "language", 0, "fc1", 16, 16), AdapterSite("2", "language", 0, "fc2", 16, 8))
    method = AdapterMethod("dmlora", dmlora=DMLoraOptions(branches=2))
    inject_adapters(model, RankSchedule(sites, (4, 0)), method)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.requires_grad], "name": "adapters"}], lr=1e-2
    )
    x = torch.randn(4, 16)
    before = model(x).detach()
    resize_adapters(model, RankSchedule(sites, (8, 4)), method, optimizer)
    assert {n: layer.rank for n, layer in adapter_layers(model).items()} == {"0": 8, "2": 4}
    torch.testing.assert_close(model(x), before, rtol=0, atol=1e-6)  # growth and new sites start at zero
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 8 * 32 + 4 * 24 + 1 * 0  # layer scalars stay frozen in stage 1
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) >= trainable
