"""``ranktune demo``: the most useful real thing ranktune does end to end today.

Plans the built-in tiny VLM at a rank-8 budget, draws random hierarchical schedules under the same
budget, and applies each exported PEFT config to a real (randomly initialised) model to prove the
ranks and parameter counts PEFT builds are exactly the planned ones.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

from search.peft_format import to_peft_config
from search.schedule import RankSchedule
from service.plan_view import print_schedule
from service.planning import make_plan

MODEL = "builtin:tiny-vlm"


def peft_ranks(schedule: RankSchedule) -> tuple[dict[str, int], int]:
    """Build the real model, wrap it with PEFT using the exported config, read back ranks and params."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from trainer.builtin.tiny_vlm import tiny_vlm_config

    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(tiny_vlm_config())
    config = to_peft_config(schedule)
    config.pop("peft_type")
    peft_model = get_peft_model(model, LoraConfig(**config))
    ranks = {}
    for name, module in model.named_modules():  # PEFT swaps its layers into ``model`` in place
        if hasattr(module, "r") and isinstance(module.r, dict) and "default" in module.r:
            ranks[name] = module.r["default"]
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    return ranks, trainable


def run_demo(console: Console, samples: int = 4) -> None:
    plan = make_plan(MODEL, budget_rank=8)
    print_schedule(console, plan.schedule, plan.budget, title=f"{MODEL} uniform baseline: ")
    schedules = [plan.schedule] + [plan.space.random(seed) for seed in range(samples)]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking schedules against PEFT", total=len(schedules))
        for schedule in schedules:
            ranks, trainable = peft_ranks(schedule)
            expected = {s.name: r for s, r in schedule.active()}
            if ranks != expected or trainable != schedule.parameter_count:
                raise AssertionError(f"PEFT built {trainable} params, planned {schedule.parameter_count}")
            progress.advance(task)
    best = schedules[1]
    print_schedule(console, best, plan.budget, title=f"{MODEL} random hierarchical sample (seed 0): ")
    console.print(
        f"[green]ok[/] {len(schedules)} schedules applied with PEFT: per-module ranks and trainable "
        f"parameters match the plan exactly (budget {plan.budget.params:,} params)."
    )
