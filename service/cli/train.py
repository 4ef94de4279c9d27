"""``ranktune train``: fine-tune one schedule on this machine and write a PEFT adapter."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ranktune.service.cli.common import err, user_errors


class Method(StrEnum):
    lora = "lora"
    dmlora = "dmlora"


@user_errors
def train(
    model: Annotated[str, typer.Option(help="builtin:tiny-vlm, builtin:minilm or a local model directory")],
    task: Annotated[str, typer.Option(help="builtin:digits-vqa, builtin:minilm-stdlib, a JSONL file or dir")],
    out: Annotated[Path, typer.Option(help="Directory for the PEFT adapter and the result")],
    schedule: Annotated[Path | None, typer.Option(help="Schedule JSON or PEFT adapter_config.json")] = None,
    uniform_rank: Annotated[int | None, typer.Option(help="Uniform rank on every site instead")] = None,
    method: Annotated[Method, typer.Option(help="lora or dmlora")] = Method.lora,
    steps: Annotated[int, typer.Option(help="Optimizer steps")] = 200,
    lr: Annotated[float, typer.Option(help="Peak learning rate")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Examples per step")] = 32,
    seed: Annotated[int, typer.Option(help="Seed (CPU runs are bit-for-bit repeatable)")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    eval_every: Annotated[int, typer.Option(help="Evaluate every N steps (0: at the end)")] = 0,
    grad_accum_steps: Annotated[
        int,
        typer.Option(
            help="Micro-batches of --batch-size per optimizer step (effective batch: their product)"
        ),
    ] = 1,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Recompute activations in the backward pass: less memory, more compute")
    ] = False,
    max_seq_len: Annotated[
        int | None, typer.Option(help="Cut text at N tokens (causal-LM and text-classification tasks)")
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 autocast on CUDA when supported, else fp32), fp32 or bf16")
    ] = "auto",
) -> None:
    """Fine-tune one schedule and write the adapter in PEFT format."""
    from ranktune.service.train_command import run_train

    run_train(
        err,
        model=model,
        task=task,
        schedule_file=schedule,
        uniform_rank=uniform_rank,
        method_kind=method.value,
        steps=steps,
        out=out,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        eval_every=eval_every,
        grad_accum_steps=grad_accum_steps,
        gradient_checkpointing=gradient_checkpointing,
        max_seq_len=max_seq_len,
        precision=precision,
    )
