"""The PEFT AdaLoRA baseline of bench/search_quality.py, trained by ranktune's own proxy loop."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterator
from typing import Any

from bench.search_quality_bench import TaskBench
from bench.search_quality_common import ADALORA_INIT_R, BUDGET_RANK, mean_std
from ranktune.search.confirm import SEED_OFFSET
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace


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


class AdaLoraTask:
    """The task with a PEFT AdaLoRA model in place of the base. ``proxy_finetune`` gets an all-zero
    rank schedule (so it adds no adapter of its own) and trains AdaLoRA's P, Λ, Q as task "heads",
    in the same optimizer group settings as LoRA's adapters (same learning rate, schedule, clipping)."""

    def __init__(self, inner: Any, space: HierarchicalSpace, steps: int) -> None:
        self.inner, self.space, self.steps = inner, space, steps
        self.metric = inner.metric
        self.head_modules: tuple[str, ...] = ()
        self.model: Any = None

    def build_model(self) -> Any:
        from peft import AdaLoraConfig, get_peft_model

        # AdaLoRA scales by lora_alpha / init_r: the same scaling as our LoRA's alpha / r.
        config = AdaLoraConfig(init_r=ADALORA_INIT_R, target_r=BUDGET_RANK, total_step=self.steps,
                               lora_alpha=self.space.alpha.alpha_for(ADALORA_INIT_R), tinit=self.steps // 10,
                               tfinal=max(1, 3 * self.steps // 10), deltaT=10,
                               target_modules=[s.name for s in self.space.sites])  # fmt: skip
        self.model = get_peft_model(self.inner.build_model(), config)
        heads = tuple(f"base_model.model.{h}" for h in self.inner.head_modules)
        factors = tuple(
            n for n, _ in self.model.named_modules() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B", "lora_E")
        )
        self.head_modules = heads + factors
        return self.model

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Any]:
        return self.inner.batches(split, batch_size, seed)

    def loss(self, model: Any, batch: Any) -> Any:
        weight = model.peft_config["default"].orth_reg_weight
        return self.inner.loss(model, batch) + weight * orth_regularizer(model)

    def evaluate_outcomes(self, model: Any, split: str = "val", batch_size: int = 256) -> Any:
        return self.inner.evaluate_outcomes(model, split, batch_size)

    def final_ranks(self) -> dict[str, int]:
        """Per site, the singular values AdaLoRA kept (its pruning zeroes Λ's entries in place)."""
        return {n.removeprefix("base_model.model.").removesuffix(".lora_E"): int((e["default"] != 0).sum())
                for n, e in self.model.named_modules() if n.endswith(".lora_E")}  # fmt: skip


def run_adalora(bench: TaskBench) -> dict[str, Any]:
    """AdaLoRA at full length with the first search seed's confirm seeds, on the test split. PEFT's
    ``update_and_allocate`` must run after each optimizer step and before ``zero_grad`` (it reads the
    gradients): torch's global optimizer step post-hook is exactly there, and nothing else trains
    while it is registered."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from ranktune.trainer.proxy import ProxySettings, proxy_finetune

    c, space, runner = bench.config, bench.space, bench.runner
    values, ranks = [], {}
    empty = RankSchedule(space.sites, (0,) * len(space.sites), space.alpha)
    first = SEED_OFFSET + bench.seeds[0]
    with bench.bar("PEFT AdaLoRA", c.confirm_seeds) as bar:
        for seed in range(first, first + c.confirm_seeds):

            def train(seed: int = seed) -> tuple[float, float, dict[str, Any]]:
                task = AdaLoraTask(runner.task, space, c.confirm_steps)
                step = itertools.count()

                def allocate(_optimizer: Any, _args: Any, _kwargs: Any) -> None:
                    task.model.base_model.update_and_allocate(next(step))

                handle = register_optimizer_step_post_hook(allocate)
                try:
                    settings = ProxySettings(c.confirm_steps, c.lr, c.batch_size, seed)
                    result = proxy_finetune(task, empty, None, settings, device=c.device, eval_split="test",
                                            on_step=runner.show_step)  # fmt: skip
                finally:
                    handle.remove()
                return result.metric, result.wall_time_s, {"final_ranks": task.final_ranks()}

            method = f"adalora {ADALORA_INIT_R}->{BUDGET_RANK}"
            key = runner.key(method=method, seed=seed, steps=c.confirm_steps, split="test")
            record = runner.recall(key, train)
            values.append(float(record["metric"]))
            ranks = record["extra"]["final_ranks"]
            bar.set_postfix(test=f"{record['metric']:.3f}")
            bar.update(1)
    uniform = bench.confirmed(bench.uniform, bench.seeds[0])
    return {
        "confirmed": mean_std(values),
        "gain_points": 100 * (statistics.mean(values) - statistics.mean(uniform)),
        "final_rank_sum": sum(ranks.values()), "budget_params": space.budget.params,
        "final_params": sum(ranks.get(s.name, 0) * s.params_per_rank for s in space.sites),
        "params_while_training": sum(ADALORA_INIT_R * (s.params_per_rank + 1) for s in space.sites),
        "final_ranks": ranks,
    }  # fmt: skip
