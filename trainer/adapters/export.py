"""Write adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

Every adapter, DMLoRA included, is written as the equivalent plain LoRA of its current rank:
A = the stacked down-projections, B = the stacked up-projections rescaled so that PEFT's own
scaling (alpha/r, or alpha/sqrt(r) with rsLoRA) reproduces ΔW exactly. A task head trained in full
and part of the model's own class (a ``…ForSequenceClassification``'s ``classifier``) is written
whole, as PEFT's ``modules_to_save``. The factors of a ``Conv1D`` site (GPT-2) have the same shapes
as a linear one's; the config says ``fan_in_fan_out`` so that PEFT merges their update transposed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ranktune.search.peft_format import to_peft_config
from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters.inject import adapter_layers, effective_schedule


@torch.no_grad()
def peft_state_dict(model: nn.Module, heads: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for head in heads:
        for key, value in model.get_submodule(head).state_dict().items():
            state[f"base_model.model.{head}.{key}"] = value.detach().float().cpu().contiguous()
    for name, layer in adapter_layers(model).items():
        if layer.rank == 0:
            continue
        a, b, scale = layer.lora_factors()
        peft_scale = layer.alpha.scaling_for(layer.rank)
        state[f"base_model.model.{name}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        state[f"base_model.model.{name}.lora_B.weight"] = (
            (b.detach().float() * (scale / peft_scale)).cpu().contiguous()
        )
    return state


def save_peft_adapter(
    model: nn.Module,
    template: RankSchedule,
    out_dir: str | Path,
    base_model: str | None = None,
    heads: Sequence[str] = (),
) -> Path:
    """Save the model's adapters so ``PeftModel.from_pretrained(base, out_dir)`` reproduces them;
    ``heads`` (module names of the base's class, trained in full) go whole into ``modules_to_save``."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = to_peft_config(effective_schedule(model, template))
    config.pop("peft_type")
    if heads:
        config["modules_to_save"] = list(heads)
    if any(layer.fan_in_fan_out and layer.rank for layer in adapter_layers(model).values()):
        config["fan_in_fan_out"] = True  # what the model holds decides, whatever the template's sites say
    LoraConfig(base_model_name_or_path=base_model, **config).save_pretrained(str(out))
    save_file(peft_state_dict(model, heads), str(out / "adapter_model.safetensors"))
    return out
