"""The importance probe in the search-quality bench: the run a ``probe`` lease makes, made here.

As in the service (``search.probe``, ``trainer.worker``): every site at twice the budget's rank, one
proxy-length run on the val split with one checkpoint at its last step that reads each adapter's
‖B·A‖_F, turned into importance per unit of rank. The run and its statistics are remembered in the
bench's ``RunStore`` (method ``probe``), so a rerun of a protocol never trains it twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ranktune.search import probe
from ranktune.search.space import HierarchicalSpace

if TYPE_CHECKING:  # the bench's search loop imports this module: no import back at run time
    from bench.search_quality_bench import Runner


def probe_importance(runner: Runner, space: HierarchicalSpace, seed: int, steps: int) -> dict[str, float]:
    """Site → importance per unit of rank from the probe run (trained once per store)."""
    schedule = probe.probe_schedule(space)

    def train() -> tuple[float, float, dict[str, Any]]:
        from ranktune.trainer.adapters import AdapterMethod
        from ranktune.trainer.proxy import Checkpoint, ProxySettings, proxy_finetune

        c = runner.config
        seen: dict[str, Any] = {}
        last = max(1, steps - 1)  # the worker's checkpoint for "at": [1.0] (trainer.worker.loop)

        def on_checkpoint(point: Checkpoint) -> None:
            if point.step == last:
                seen.update(point.site_statistics())

        settings = ProxySettings(
            steps=steps, lr=c.lr, batch_size=c.batch_size, seed=seed, checkpoints=(last,)
        )
        result = proxy_finetune(runner.task, schedule, AdapterMethod("lora"), settings, device=c.device,
                                eval_split="val", callback=on_checkpoint)  # fmt: skip
        return result.metric, result.wall_time_s, {"site_stats": seen}

    record = runner.recall(probe_key(runner, space, seed, steps), train)
    return probe.site_importance(schedule, record["extra"]["site_stats"])


def probe_key(runner: Runner, space: HierarchicalSpace, seed: int, steps: int) -> str:
    ranks = list(probe.probe_schedule(space).ranks)
    return runner.key(method="probe", ranks=ranks, seed=seed, steps=steps, split="val")


def probe_cost(runner: Runner, space: HierarchicalSpace, seed: int, steps: int) -> tuple[float, int]:
    """(seconds, steps) of a search's probe run as stored; (0, 0) when it was never trained."""
    record = runner.store.get(probe_key(runner, space, seed, steps))
    return (float(record["wall_s"]), steps) if record else (0.0, 0)
