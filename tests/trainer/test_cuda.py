"""The adapters on CUDA (skipped without a GPU): merge equality in fp32 and bf16 autocast training."""

from __future__ import annotations

import pytest
import torch

from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions, inject_adapters, merge_adapters
from ranktune.trainer.sites import discover_sites
from tests.tiny_models import TINY_MODELS

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["lora", "dmlora"])
def test_merge_matches_unmerged_on_cuda(kind: str) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS["llama"]()
    schedule = RankSchedule.uniform(discover_sites(model), 8)
    layers = inject_adapters(model, schedule, AdapterMethod(kind, dmlora=DMLoraOptions(branches=4)))  # type: ignore[arg-type]
    model.cuda().eval()
    with torch.no_grad():
        for layer in layers.values():
            for name, param in layer.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.1)
        ids = torch.randint(1, 60, (2, 9), device="cuda")
        unmerged = model(input_ids=ids).logits
        merge_adapters(model)
        torch.testing.assert_close(model(input_ids=ids).logits, unmerged, rtol=0, atol=1e-4)


def test_bf16_autocast_training_step_reaches_every_adapter() -> None:
    torch.manual_seed(0)
    model = TINY_MODELS["llama"]()
    schedule = RankSchedule.uniform(discover_sites(model), 4)
    layers = inject_adapters(model, schedule, AdapterMethod("dmlora"))
    model.cuda().train()
    ids = torch.randint(1, 60, (4, 12), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    for layer in layers.values():
        assert all(a.grad is not None and torch.isfinite(a.grad).all() for a in layer.lora_A)
