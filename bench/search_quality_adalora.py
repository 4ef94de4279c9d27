"""The PEFT AdaLoRA baseline of bench/search_quality.py, trained by ranktune's own proxy loop."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from bench.search_quality_bench import TaskBench
from bench.search_quality_common import adalora_init_r
from bench.search_quality_peft import PeftTask, run_peft_baseline


def orth_regularizer(model: Any) -> Any:
    """AdaLoRA's penalty ‖PPᵀ − I‖ + ‖QᵀQ − I‖ averaged over matrices, as ``AdaLoraModel.forward``
    adds it; ``PeftModel.forward`` skips that forward, and a task's own loss never sees it."""
    import torch

    terms = []
    for name, p in model.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(cov.shape[0], device=cov.device)))
    return torch.stack(terms).mean()


class AdaLoraTask(PeftTask):
    """AdaLoRA (init_r above the budget's rank, target_r the budget's) over the task's base."""

    def peft_model(self, base: Any) -> Any:
        from peft import AdaLoraConfig, get_peft_model

        # AdaLoRA scales by lora_alpha / init_r: the same scaling as our LoRA's alpha / r.
        budget_rank = self.space.budget.uniform_rank
        init_r = adalora_init_r(budget_rank)
        config = AdaLoraConfig(init_r=init_r, target_r=budget_rank, total_step=self.steps,
                               lora_alpha=self.space.alpha.alpha_for(init_r), tinit=self.steps // 10,
                               tfinal=max(1, 3 * self.steps // 10), deltaT=10,
                               target_modules=[s.name for s in self.space.sites])  # fmt: skip
        return get_peft_model(base, config)

    def loss(self, model: Any, batch: Any) -> Any:
        weight = model.peft_config["default"].orth_reg_weight
        return self.inner.loss(model, batch) + weight * orth_regularizer(model)

    def final_ranks(self) -> dict[str, int]:
        """Per site, the singular values AdaLoRA kept (its pruning zeroes Λ's entries in place)."""
        return {n.removeprefix("base_model.model.").removesuffix(".lora_E"): int((e["default"] != 0).sum())
                for n, e in self.model.named_modules() if n.endswith(".lora_E")}  # fmt: skip


def allocate_ranks(task: PeftTask, run: Callable[[], Any]) -> Any:
    """PEFT's ``update_and_allocate`` must run after each optimizer step and before ``zero_grad`` (it
    reads the gradients): torch's global optimizer step post-hook is exactly there, and nothing else
    trains while it is registered."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    step = itertools.count()

    def allocate(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
        task.model.base_model.update_and_allocate(next(step))

    handle = register_optimizer_step_post_hook(allocate)
    try:
        return run()
    finally:
        handle.remove()


def run_adalora(bench: TaskBench) -> dict[str, Any]:
    """AdaLoRA at full length with the first search seed's confirm seeds, on the test split."""
    c, space = bench.config, bench.space
    init_r = adalora_init_r(c.budget_rank)
    figures = run_peft_baseline(
        bench, f"adalora {init_r}->{c.budget_rank}",
        lambda _seed: AdaLoraTask(bench.runner.task, space, c.confirm_steps), "PEFT AdaLoRA", allocate_ranks,
    )  # fmt: skip
    figures["params_while_training"] = sum(init_r * (s.params_per_rank + 1) for s in space.sites)
    return figures
