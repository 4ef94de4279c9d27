"""The PEFT EVA baseline of bench/search_quality.py: LoRA initialised from the singular vectors of
each site's input activations, with ranks redistributed by explained variance (``rho`` > 1: a site may
get up to rho × r), then trained by ranktune's own proxy loop.

EVA's budget is in ranks (r per site, summed), not parameters: moving rank between sites of different
widths changes the parameter count, which the report gives next to the budget. Activations are taken
from every token of a batch (padding included: the tiny VLM's vision tower sees another sequence
length than its language model, so the language-modelling mask of PEFT's default does not apply)."""

from __future__ import annotations

import itertools
from typing import Any

from bench.search_quality_bench import TaskBench
from bench.search_quality_common import EVA_RHO
from bench.search_quality_peft import PeftTask, run_peft_baseline

EVA_BATCHES = 16  # batches of the train split whose activations EVA's incremental SVD cycles over


def every_token(layer_input: Any, model_input: Any, layer_name: str) -> Any:
    """A site's input as a (tokens, features) matrix for EVA's SVD: all tokens of the batch."""
    tensor = layer_input[0] if isinstance(layer_input, tuple | list) else layer_input
    return tensor.reshape(-1, tensor.shape[-1])


class EvaTask(PeftTask):
    """LoRA of rank r = the budget's on every site, EVA-initialised and redistributed (rho)."""

    def __init__(self, inner: Any, space: Any, steps: int, seed: int) -> None:
        super().__init__(inner, space, steps)
        self.seed = seed

    def peft_model(self, base: Any) -> Any:
        import torch
        from peft import EvaConfig, LoraConfig, get_peft_model, initialize_lora_eva_weights

        rank = self.space.budget.uniform_rank
        config = LoraConfig(r=rank, lora_alpha=self.space.alpha.alpha_for(rank),
                            target_modules=[s.name for s in self.space.sites], init_lora_weights="eva",
                            eva_config=EvaConfig(rho=EVA_RHO))  # fmt: skip
        model = get_peft_model(base, config, low_cpu_mem_usage=True)
        batches = list(itertools.islice(self.inner.batches("train", 32, self.seed), EVA_BATCHES))
        with torch.no_grad():
            initialize_lora_eva_weights(model, batches, forward_fn=lambda m, b: self.inner.loss(m, b),
                                        prepare_model_inputs_fn=None, prepare_layer_inputs_fn=every_token,
                                        show_progress_bar=False)  # fmt: skip
        return model  # proxy_finetune freezes it but for the factors (the task's "heads")


def run_eva(bench: TaskBench) -> dict[str, Any]:
    """EVA at full length with the first search seed's confirm seeds, on the test split."""
    steps = bench.config.confirm_steps
    return run_peft_baseline(
        bench, f"eva r{bench.config.budget_rank} rho{EVA_RHO}",
        lambda seed: EvaTask(bench.runner.task, bench.space, steps, seed), f"PEFT EVA rho {EVA_RHO}",
    )  # fmt: skip
