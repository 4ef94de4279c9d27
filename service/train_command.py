"""``ranktune train``: one fine-tune of a schedule with a progress bar; writes a PEFT adapter."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ranktune.search.errors import ScheduleError
from ranktune.search.grid import RankGrid
from ranktune.search.peft_format import from_peft_config
from ranktune.search.schedule import RankSchedule
from ranktune.search.sites import AdapterSite


def read_schedule(path: Path, sites: tuple[AdapterSite, ...]) -> RankSchedule:
    """A ranktune schedule JSON, or a PEFT ``adapter_config.json`` (file or adapter directory)."""
    source = path / "adapter_config.json" if path.is_dir() else path
    try:
        data = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ScheduleError(f"schedule: cannot read {source} ({e})") from e
    if not isinstance(data, dict):
        raise ScheduleError(f"schedule: {source} does not hold a JSON object")
    if "sites" in data:
        schedule = RankSchedule.from_json(data)
        by_name = {s.name: s for s in sites}
        for site in schedule.sites:
            if by_name.get(site.name) != site:
                raise ScheduleError(f"schedule: site {site.name} in {source} does not match the model")
        return schedule
    return from_peft_config(data, sites)


def run_train(
    console: Console,
    *,
    model: str,
    task: str,
    schedule_file: Path | None,
    uniform_rank: int | None,
    method_kind: str,
    steps: int,
    out: Path,
    lr: float,
    batch_size: int,
    seed: int,
    device: str,
    eval_every: int,
    grad_accum_steps: int = 1,
    gradient_checkpointing: bool = False,
    max_seq_len: int | None = None,
    precision: str = "auto",
) -> None:
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.adapters.export import save_peft_adapter
    from ranktune.trainer.adapters.inject import effective_schedule
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune
    from ranktune.trainer.sites import sites_of_model
    from ranktune.trainer.tasks.registry import load_task

    if (schedule_file is None) == (uniform_rank is None):
        raise ScheduleError("schedule: pass exactly one of --schedule FILE or --uniform-rank R")
    settings = ProxySettings(
        steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=eval_every,
        grad_accum_steps=grad_accum_steps, gradient_checkpointing=gradient_checkpointing,
        max_seq_len=max_seq_len, precision=precision,  # type: ignore[arg-type]  # checked by ProxySettings
    )  # fmt: skip
    method = AdapterMethod(method_kind)  # type: ignore[arg-type]
    the_task = load_task(task, model)
    the_task.set_max_seq_len(max_seq_len)  # before building the model: a task that cannot cut fails now
    sites = sites_of_model(the_task.build_model())
    if schedule_file is not None:
        schedule = read_schedule(schedule_file, sites)
    else:
        assert uniform_rank is not None
        if uniform_rank < 1:
            raise ScheduleError(f"--uniform-rank: must be >= 1, got {uniform_rank}", field="uniform_rank")
        schedule = RankSchedule.uniform(sites, uniform_rank, RankGrid((0, uniform_rank)))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(f"{method.kind} on {task}", total=steps)

        def on_step(step: int, loss: float) -> None:
            progress.update(bar, completed=step, description=f"{method.kind} on {task} loss={loss:.3f}")

        result = proxy_finetune(the_task, schedule, method, settings, device=device, on_step=on_step)
    assert result.model is not None
    save_peft_adapter(result.model, schedule, out, base_model=model, heads=the_task.saved_heads)
    # What was written: DMLoRA may have pruned branches, so fewer ranks than requested (and trained).
    written = effective_schedule(result.model, schedule)
    (out / "ranktune_result.json").write_text(
        json.dumps(
            {**result.to_json(), "exported_params": written.parameter_count, "precision": result.precision},
            indent=2,
        )
    )
    (out / "ranktune_schedule.json").write_text(written.dumps())
    table = Table(title=f"{task} on {model}", title_justify="left")
    for column in ("metric", "value"):
        table.add_column(column)
    se = result.metric_se
    spread = f" ± {se:.4f} (s.e., {result.examples:,} val examples)" if se is not None else ""
    table.add_row(result.metric_name, f"{result.metric:.4f}{spread}")
    for name, value in result.metrics.items():
        if name != result.metric_name:
            table.add_row(name, f"{value:.4f}")
    if written.parameter_count == result.adapter_params:
        table.add_row("adapter params", f"{result.adapter_params:,}")
    else:
        table.add_row("adapter params, trained", f"{result.adapter_params:,}")
        table.add_row("adapter params, written", f"{written.parameter_count:,} (branches pruned)")
    table.add_row("trainable params", f"{result.trainable_params:,}")
    accumulated = (
        f" (each of {grad_accum_steps} micro-batches of {batch_size})" if grad_accum_steps > 1 else ""
    )
    table.add_row("steps", f"{result.steps_done}{accumulated}")
    table.add_row(
        "precision", result.precision + (", gradient checkpointing" if gradient_checkpointing else "")
    )
    table.add_row("wall time", f"{result.wall_time_s:.1f} s")
    table.add_row("peak memory", peak_memory_text(result.peak_memory_bytes, result.device))
    console.print(table)
    console.print(f"PEFT adapter written to {out}", highlight=False, soft_wrap=True)


def peak_memory_text(peak: int | None, device: str) -> str:
    """What the run's peak memory was, saying what was measured (see ``trainer.runtime``)."""
    if peak is None:
        return "not measured on this platform"
    what = "CUDA tensors" if device.startswith("cuda") else "process RSS"
    return f"{peak / 2**20:,.0f} MiB ({what})"
