"""Trainer figures on builtin:tiny-vlm + builtin:digits-vqa, side by side in one run.

1. Wall time of a 200-step proxy fine-tune (goal ≤ 30 s on 2 CPU cores).
2. Accuracy: no tuning vs uniform rank-8 LoRA vs DMLoRA at the same parameters vs full fine-tuning.
3. Train-step time: ranktune LoRA vs the frozen base (goal ≤ 1.15×) and vs PEFT LoRA with the
   same schedule (goal ≥ 0.9× PEFT's speed); variants interleaved round by round on the same batches.
4. Inference latency: DMLoRA merged and unloaded vs the base model (goal within 2%), merged with the
   wrappers kept, and unmerged.

Run: .venv/bin/python bench/bench_trainer.py [--device cpu|cuda] [--steps 200] [--long-steps 600]
     [--inference-only]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ranktune.search.grid import RankGrid
from ranktune.search.peft_format import to_peft_config
from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters import AdapterMethod, inject_adapters, merge_adapters, merge_and_unload
from ranktune.trainer.proxy import ProxySettings, proxy_finetune, resolve_device
from ranktune.trainer.sites import sites_of_model
from ranktune.trainer.tasks.registry import load_task

MODEL, TASK = "builtin:tiny-vlm", "builtin:digits-vqa"

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def accuracy_rows(task, schedule: RankSchedule, device: str, steps: int, long_steps: int) -> list[list[str]]:
    base = task.build_model().to(resolve_device(device))
    untuned = task.evaluate(base, "test")
    rows = [["no tuning", "0", "-", f"{untuned:.3f}", "-"]]
    runs = [
        ("uniform rank-8 LoRA", schedule, AdapterMethod("lora"), 1e-3),
        ("DMLoRA, same params", schedule, AdapterMethod("dmlora"), 1e-3),
        ("full fine-tuning", None, AdapterMethod("lora"), 3e-4),
    ]
    for label, sched, method, lr in runs:
        for n in (steps, long_steps):
            result = proxy_finetune(task, sched, method, ProxySettings(steps=n, lr=lr), device=device,
                                    eval_split="test")  # fmt: skip
            params = result.adapter_params if sched is not None else result.trainable_params
            rows.append([label, f"{params:,}", str(n), f"{result.metric:.3f}", f"{result.wall_time_s:.1f} s"])
    return rows


def frozen_base(model: nn.Module) -> nn.Module:
    """The base with no trainable weights, but backward still runs through every layer (as LoRA's does)."""

    def requires_grad(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        return output.requires_grad_(True)

    model.get_input_embeddings().register_forward_hook(requires_grad)
    model.model.vision_tower.embeddings.register_forward_hook(requires_grad)
    return model


def peft_lora(model: nn.Module, schedule: RankSchedule) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    config = to_peft_config(schedule)
    config.pop("peft_type")
    return get_peft_model(model, LoraConfig(**config))


def step_times(
    task, variants: dict[str, nn.Module], device: torch.device, rounds: int, steps: int
) -> dict[str, float]:
    stream = task.batches("train", 32, 0)
    batches = [{k: v.to(device) for k, v in next(stream).items()} for _ in range(steps)]
    optimizers = {}
    for name, model in variants.items():
        model.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizers[name] = torch.optim.AdamW(params, lr=1e-3) if params else None
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(rounds + 1):
        for name, model in variants.items():
            optimizer = optimizers[name]
            sync(device)
            start = time.perf_counter()
            for batch in batches:
                loss = task.loss(model, batch)
                loss.backward()
                if optimizer is not None:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            sync(device)
            if round_ > 0:  # round 0 warms up
                samples[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def latency(task, variants: dict[str, nn.Module], device: torch.device, rounds: int) -> dict[str, float]:
    batch = {k: v.to(device) for k, v in next(task.batches("val", 256, 0)).items()}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for model in variants.values():
        model.to(device).eval()
    with torch.no_grad():
        names = list(variants)
        for round_ in range(rounds + 1):
            # Each round starts with the next variant: no variant always runs first (or after another).
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                model = variants[name]
                sync(device)
                start = time.perf_counter()
                for _ in range(5):
                    task.loss(model, batch)
                sync(device)
                if round_ > 0:
                    samples[name].append((time.perf_counter() - start) / 5)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    from bench.results_md import table

    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--long-steps", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--inference-only", action="store_true", help="only the inference latency table")
    args = parser.parse_args()
    device = resolve_device(args.device)
    task = load_task(TASK, MODEL)
    sites = sites_of_model(task.build_model())
    schedule = RankSchedule.uniform(sites, 8, RankGrid((0, 8)))
    if not args.inference_only:
        training_figures(args, task, schedule, device)
    lat = inference_latency(task, schedule, device, args.rounds)
    print("\n" + table(["inference (batch 256)", "median ms", "vs base"], [
        [name, f"{value * 1e3:.2f}", f"{value / lat['base']:.3f}x"] for name, value in lat.items()
    ]))  # fmt: skip


def inference_latency(task, schedule: RankSchedule, device: torch.device, rounds: int) -> dict[str, float]:
    """The base vs DMLoRA merged and unloaded (plain nn.Linear back), merged in its wrappers, unmerged."""
    torch.manual_seed(0)
    unmerged = task.build_model()
    inject_adapters(unmerged, schedule, AdapterMethod("dmlora"))
    wrapped = copy.deepcopy(unmerged)
    merge_adapters(wrapped)
    unloaded = merge_and_unload(copy.deepcopy(unmerged))
    variants = {"base": task.build_model(), "DMLoRA merged and unloaded": unloaded,
                "DMLoRA merged, wrappers kept": wrapped, "DMLoRA unmerged": unmerged}  # fmt: skip
    return latency(task, variants, device, rounds)


def training_figures(args: argparse.Namespace, task, schedule: RankSchedule, device: torch.device) -> None:
    from bench.results_md import table

    timer: Callable[[], float] = time.perf_counter
    start = timer()
    proxy = proxy_finetune(
        task, schedule, AdapterMethod("lora"), ProxySettings(steps=args.steps), device=args.device
    )
    print(f"## {args.steps}-step proxy on {device}: {timer() - start:.1f} s wall "
          f"(proxy's own clock {proxy.wall_time_s:.1f} s), val accuracy {proxy.metric:.3f}\n")  # fmt: skip

    print(table(["run", "adapter params", "steps", "test accuracy", "wall"],
                accuracy_rows(task, schedule, args.device, args.steps, args.long_steps)))  # fmt: skip

    torch.manual_seed(0)
    ours = task.build_model()
    inject_adapters(ours, schedule, AdapterMethod("lora"))
    variants = {"frozen base": frozen_base(task.build_model()), "ranktune LoRA": ours,
                "PEFT LoRA": peft_lora(task.build_model(), schedule)}  # fmt: skip
    times = step_times(task, variants, device, args.rounds, 10)
    base_t, ours_t, peft_t = times["frozen base"], times["ranktune LoRA"], times["PEFT LoRA"]
    print("\n" + table(["train step (batch 32)", "median ms", "ratio"], [
        ["frozen base", f"{base_t * 1e3:.1f}", "1.00x"],
        ["ranktune LoRA", f"{ours_t * 1e3:.1f}", f"{ours_t / base_t:.2f}x of base (goal <= 1.15x)"],
        ["PEFT LoRA", f"{peft_t * 1e3:.1f}", f"ours at {peft_t / ours_t:.2f}x PEFT's speed (goal >= 0.9x)"],
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
