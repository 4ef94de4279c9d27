"""The proxy fine-tune on the real built-in VLM task: results, determinism, stop and resize."""

from __future__ import annotations

import pytest
import torch

from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions
from ranktune.trainer.adapters.inject import adapter_layers
from ranktune.trainer.errors import TrainingError
from ranktune.trainer.proxy import Checkpoint, ProxySettings, Resize, Stop, proxy_finetune


def test_result_reports_what_was_trained(task, space) -> None:
    schedule = space.random(0)
    result = proxy_finetune(task, schedule, settings=ProxySettings(steps=10, eval_every=5, batch_size=16))
    assert 0.0 <= result.metric <= 1.0 and result.metric_name == "accuracy"
    assert [m.step for m in result.curve] == [5, 10]
    assert all(m.loss > 0 and m.metric is not None for m in result.curve)
    assert result.adapter_params == result.trainable_params == schedule.parameter_count
    assert result.steps_done == 10 and result.stopped is None
    assert result.wall_time_s > 0 and result.peak_memory_bytes > 0
    assert result.timeline == [(0, schedule)]


def test_cpu_runs_are_bit_for_bit_repeatable(task, space) -> None:
    settings = ProxySettings(steps=8, batch_size=16, seed=3)
    method = AdapterMethod("dmlora", dmlora=DMLoraOptions(drop_start=0.0, drop_end=0.5, prune_at=(0.5,)))
    first = proxy_finetune(task, space.random(1), method, settings)
    second = proxy_finetune(task, space.random(1), method, settings)
    assert first.curve == second.curve and first.metric == second.metric
    assert first.model is not None and second.model is not None
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = proxy_finetune(
        task, space.random(1), method, ProxySettings(steps=12, eval_every=6, batch_size=16, seed=4)
    )
    assert other.curve != first.curve


def test_callback_can_stop(task, space) -> None:
    seen: list[int] = []

    def stop_at_first(point: Checkpoint) -> Stop:
        seen.append(point.step)
        return Stop("pruned")

    result = proxy_finetune(task, space.uniform(), callback=stop_at_first,
                            settings=ProxySettings(steps=30, eval_every=5, batch_size=8))  # fmt: skip
    assert seen == [5] and result.steps_done == 5 and result.stopped == "pruned"


def test_stop_requested_is_checked_every_step(task, space) -> None:
    calls = iter(range(100))
    result = proxy_finetune(task, space.uniform(), settings=ProxySettings(steps=30, batch_size=8),
                            stop_requested=lambda: "preempted" if next(calls) >= 3 else None)  # fmt: skip
    assert result.steps_done == 3 and result.stopped == "preempted"


@pytest.mark.parametrize("kind", ["lora", "dmlora"])
def test_callback_can_resize_under_the_same_budget(task, space, kind: str) -> None:
    target = space.random(5)

    def resize_once(point: Checkpoint) -> Resize | None:
        stats = point.site_statistics()
        assert set(stats) == {s.name for s, _ in space.uniform().active()} or point.step > 5
        return Resize(target) if point.step == 5 else None

    method = AdapterMethod(kind, dmlora=DMLoraOptions(prune_at=()))  # type: ignore[arg-type]
    result = proxy_finetune(task, space.uniform(), method, callback=resize_once,
                            settings=ProxySettings(steps=10, eval_every=5, batch_size=8))  # fmt: skip
    assert [step for step, _ in result.timeline] == [0, 5]
    assert result.model is not None
    ranks = {name: layer.rank for name, layer in adapter_layers(result.model).items() if layer.rank}
    assert ranks == {s.name: r for s, r in target.active()}
    assert result.metric == result.metric  # finite after resizing mid-run


def test_full_finetuning_baseline_trains_every_weight(task) -> None:
    result = proxy_finetune(task, None, settings=ProxySettings(steps=3, batch_size=8, lr=1e-4))
    assert result.trainable_params == sum(p.numel() for p in task.build_model().parameters())
    assert result.adapter_params == 0


def test_invalid_settings_name_the_field() -> None:
    with pytest.raises(TrainingError, match=r"proxy\.steps"):
        ProxySettings(steps=0)
    with pytest.raises(TrainingError, match=r"proxy\.lr"):
        ProxySettings(lr=float("nan"))


def test_schedule_of_another_model_is_refused(task) -> None:
    from ranktune.trainer.sites import discover_sites
    from tests.tiny_models import TINY_MODELS

    foreign = RankSchedule.uniform(discover_sites(TINY_MODELS["bert"]()), 2)
    with pytest.raises(TrainingError, match="not a module of this model"):
        proxy_finetune(task, foreign, settings=ProxySettings(steps=1))
