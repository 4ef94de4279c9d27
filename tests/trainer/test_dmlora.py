"""DMLoRA's training-time behaviour: branch dropout, pruning milestones, the 2-stage scalar."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ranktune.search.schedule import AlphaRule
from ranktune.search.sites import AdapterSite
from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions
from ranktune.trainer.adapters.dmlora import DMLoraController, DMLoraLinear
from ranktune.trainer.errors import MethodError

SITE = AdapterSite("proj", "language", 0, "q", 16, 16)


def layer_with(options: DMLoraOptions, rank: int = 8) -> DMLoraLinear:
    torch.manual_seed(0)
    layer = DMLoraLinear(nn.Linear(16, 16), SITE, rank, AlphaRule(), options)
    with torch.no_grad():
        for b in layer.lora_B:
            b.normal_()
    return layer


def test_dropped_branches_skip_forward_and_backward() -> None:
    layer = layer_with(DMLoraOptions(branches=4))
    layer.train()
    layer.drop_probability = 0.75
    torch.manual_seed(3)
    layer(torch.randn(4, 16)).sum().backward()
    got_grad = [b.grad is not None for b in layer.lora_B]
    assert 1 <= sum(got_grad) < 4, "some branches must be dropped, at least one must run"
    layer.eval()  # no dropping at evaluation
    for b in layer.lora_B:
        b.grad = None
    layer(torch.randn(4, 16)).sum().backward()
    assert all(b.grad is not None for b in layer.lora_B)


def test_drop_probability_rises_on_schedule() -> None:
    options = DMLoraOptions(drop_max=0.4, drop_start=0.2, drop_end=0.6)
    values = [options.drop_probability(p / 10) for p in range(11)]
    assert values[0] == values[2] == 0.0
    assert values == sorted(values) and values[6] == values[10] == pytest.approx(0.4)
    cosine = DMLoraOptions(drop_max=0.4, drop_start=0.2, drop_end=0.6, drop_schedule="cosine")
    assert cosine.drop_probability(0.3) < options.drop_probability(0.3)


def test_controller_prunes_at_milestones_and_switches_stage() -> None:
    options = DMLoraOptions(branches=4, prune_at=(0.25, 0.5, 0.75), min_branches=2, stage2_at=0.6,
                            stage2_branch_lr=0.0)  # fmt: skip
    layer = layer_with(options)
    strengths = [layer.branch_strength(k) for k in range(4)]
    optimizer = torch.optim.AdamW(
        [{"params": [*layer.lora_A, *layer.lora_B], "name": "adapters"},
         {"params": [layer.layer_scale], "name": "scalars", "lr": options.scalar_lr}], lr=1e-3,
    )  # fmt: skip
    controller = DMLoraController([layer], options, total_steps=100)
    controller.on_step(25, optimizer)
    assert len(layer.active_branches()) == 3
    assert strengths.index(min(strengths)) not in layer.active_branches(), "the weakest branch goes"
    controller.on_step(50, optimizer)
    controller.on_step(75, optimizer)
    assert len(layer.active_branches()) == 2, "never below min_branches"
    assert controller.stage == 2 and layer.layer_scale.requires_grad
    assert not any(p.requires_grad for p in layer.lora_A)
    layer.train()
    layer(torch.randn(3, 16)).sum().backward()
    assert layer.layer_scale.grad is not None and layer.layer_scale.grad != 0


def test_invalid_options_name_the_field() -> None:
    with pytest.raises(MethodError, match=r"method\.min_branches"):
        DMLoraOptions(branches=2, min_branches=3)
    with pytest.raises(MethodError, match=r"method\.drop_max"):
        DMLoraOptions(drop_max=1.0)
    with pytest.raises(MethodError, match=r"method\.kind"):
        AdapterMethod("prefix")  # type: ignore[arg-type]
    with pytest.raises(MethodError, match="method"):
        AdapterMethod.from_json({"kind": "dmlora", "dmlora": {"brunches": 3}})


def test_method_json_round_trip() -> None:
    method = AdapterMethod("dmlora", dmlora=DMLoraOptions(branches=3, prune_at=(0.7, 0.4)))
    assert AdapterMethod.from_json(method.to_json()) == method
