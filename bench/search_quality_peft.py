"""What the PEFT baselines of bench/search_quality.py (AdaLoRA, EVA) share: a task whose model is a
PEFT model over the task's base, trained by ranktune's own proxy loop, and the confirmation loop that
runs it with the first search seed's confirm seeds on the test split."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from typing import Any

from bench.search_quality_bench import TaskBench
from bench.search_quality_common import mean_std
from ranktune.search.confirm import SEED_OFFSET
from ranktune.search.paired import decode_outcomes, paired_gain
from ranktune.search.schedule import RankSchedule
from ranktune.search.space import HierarchicalSpace

FACTORS = ("lora_A", "lora_B", "lora_E")


class PeftTask:
    """The task with a PEFT model in place of the base. ``proxy_finetune`` gets an all-zero rank
    schedule (so it adds no adapter of its own) and trains the PEFT factors as task "heads", in the
    same optimizer group settings as LoRA's adapters (same learning rate, schedule, clipping)."""

    def __init__(self, inner: Any, space: HierarchicalSpace, steps: int) -> None:
        self.inner, self.space, self.steps = inner, space, steps
        self.metric = inner.metric
        self.head_modules: tuple[str, ...] = ()
        self.model: Any = None

    def peft_model(self, base: Any) -> Any:
        """The PEFT model over ``base`` (subclasses configure and initialise it)."""
        raise NotImplementedError

    def build_model(self) -> Any:
        self.model = self.peft_model(self.inner.build_model())
        heads = tuple(f"base_model.model.{h}" for h in self.inner.head_modules)
        factors = tuple(n for n, _ in self.model.named_modules() if n.rsplit(".", 1)[-1] in FACTORS)
        self.head_modules = heads + factors
        return self.model

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Any]:
        return self.inner.batches(split, batch_size, seed)

    def loss(self, model: Any, batch: Any) -> Any:
        return self.inner.loss(model, batch)

    def evaluate_outcomes(self, model: Any, split: str = "val", batch_size: int = 256) -> Any:
        return self.inner.evaluate_outcomes(model, split, batch_size)

    def __getattr__(self, name: str) -> Any:
        # Everything else of the Task contract (metric_directions, metric_outcomes, loss_items,
        # set_max_seq_len, ...) is the inner task's: the PEFT model changes only the parameters.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def final_ranks(self) -> dict[str, int]:
        """Per site, the rank the adapter holds at the end of training."""
        return {n.removeprefix("base_model.model.").removesuffix(".lora_A"): int(m["default"].out_features)
                for n, m in self.model.named_modules() if n.endswith(".lora_A")}  # fmt: skip


def run_peft_baseline(
    bench: TaskBench,
    method: str,
    make_task: Callable[[int], PeftTask],
    label: str,
    wrap_training: Callable[[PeftTask, Callable[[], Any]], Any] | None = None,
) -> dict[str, Any]:
    """``make_task(seed)``'s PEFT model at full length with the first search seed's confirm seeds, on the
    test split; ``method`` is part of the store key. ``wrap_training(task, run)`` may wrap the proxy
    loop (AdaLoRA's rank allocation hooks the optimizer)."""
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune

    c, space, runner = bench.config, bench.space, bench.runner
    values, ranks, seconds = [], {}, 0.0
    runs: dict[int, tuple[float, Any]] = {}
    empty = RankSchedule(space.sites, (0,) * len(space.sites), space.alpha)
    first = SEED_OFFSET + bench.seeds[0]
    with bench.bar(label, c.confirm_seeds) as bar:
        for seed in range(first, first + c.confirm_seeds):

            def train(seed: int = seed) -> tuple[float, float, dict[str, Any]]:
                task = make_task(seed)
                settings = ProxySettings(c.confirm_steps, c.lr, c.batch_size, seed)

                def run() -> Any:
                    return proxy_finetune(task, empty, None, settings, device=c.device, eval_split="test",
                                          on_step=runner.show_step)  # fmt: skip

                result = wrap_training(task, run) if wrap_training else run()
                extra = {"final_ranks": task.final_ranks(), "outcomes": result.to_json()["outcomes"]}
                return result.metric, result.wall_time_s, extra

            key = runner.key(method=method, seed=seed, steps=c.confirm_steps, split="test")
            record = runner.recall(key, train)
            values.append(float(record["metric"]))
            outcomes = record["extra"].get("outcomes")
            runs[seed] = (values[-1], decode_outcomes(outcomes) if outcomes else None)
            ranks, seconds = record["extra"]["final_ranks"], seconds + float(record["wall_s"])
            bar.set_postfix(test=f"{record['metric']:.3f}")
            bar.update(1)
    uniform = bench.confirmed(bench.uniform, bench.seeds[0])
    uniform_runs, uniform_s = {}, []
    for seed, value in zip(range(first, first + c.confirm_seeds), uniform, strict=True):
        found = bench.store.get(runner.lora_key(bench.uniform.ranks, seed, c.confirm_steps, "test")) or {}
        outcomes = found.get("extra", {}).get("outcomes")
        uniform_runs[seed] = (value, decode_outcomes(outcomes) if outcomes else None)
        uniform_s.append(float(found.get("wall_s", 0.0)))
    paired = paired_gain(runs, uniform_runs)
    unit = statistics.mean(uniform_s)
    return {
        "paired": paired.to_json() if paired else None,
        "compute": {"seconds": seconds, "full_runs": seconds / len(values) / unit if unit else None},
        "confirmed": mean_std(values),
        "gain_points": 100 * (statistics.mean(values) - statistics.mean(uniform)),
        "final_rank_sum": sum(ranks.values()), "budget_params": space.budget.params,
        "final_params": sum(ranks.get(s.name, 0) * s.params_per_rank for s in space.sites),
        "final_ranks": ranks, "train_seconds": seconds,
    }  # fmt: skip
