"""A run that goes on from a shorter one's state (multi-fidelity promotions): on the real built-in VLM."""

from __future__ import annotations

import pytest
import torch

from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions
from ranktune.trainer.errors import TrainingError
from ranktune.trainer.proxy import ProxySettings, lr_factor, proxy_finetune
from ranktune.trainer.resume import TrainState, restore


def settings(steps: int) -> ProxySettings:
    return ProxySettings(steps=steps, batch_size=16, seed=2, lr=3e-3)


@pytest.fixture(scope="module")
def short(task, space):
    return proxy_finetune(task, space.random(0), settings=settings(6), keep_state=True)


def test_the_state_holds_the_trained_tensors_and_survives_bytes(short) -> None:
    assert short.state is not None and short.state.steps == 6 and short.state.batches == 6
    assert short.model is not None
    trained = {n: p for n, p in short.model.named_parameters() if p.requires_grad}
    state = TrainState.from_bytes(short.state.to_bytes())
    assert set(state.tensors) == set(trained) and len(state.optimizer["state"]) > 0
    for name, tensor in trained.items():
        assert torch.equal(state.tensors[name], tensor.detach().cpu()), name


def test_a_resumed_run_starts_from_the_state_on_the_next_batches(task, space, short) -> None:
    """Its first loss is the short run's model on the 7th batch: weights and data position carry over."""
    losses: dict[int, float] = {}
    state = TrainState.from_bytes(short.state.to_bytes())
    run = settings(12)
    longer = proxy_finetune(task, space.random(0), settings=run, start=state, on_step=losses.setdefault)
    assert sorted(losses) == list(range(7, 13))
    assert longer.steps_done == 12 and longer.resumed_from == 6 and longer.to_json()["resumed_from"] == 6
    assert longer.state is None  # only kept when asked
    model = task.build_model()
    from ranktune.trainer.adapters.inject import inject_adapters

    inject_adapters(model, space.random(0), AdapterMethod(), trainable=task.head_modules)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    fresh_optimizer = TrainState(state.steps, state.batches, state.tensors, optimizer.state_dict())
    restore(model, optimizer, fresh_optimizer, 12)
    stream = task.batches("train", 16, 2)
    for _ in range(6):
        next(stream)
    model.train()
    with torch.no_grad():
        expected = float(task.loss(model, next(stream)))
    assert losses[7] == pytest.approx(expected, rel=1e-5)
    scratch = proxy_finetune(task, space.random(0), settings=settings(6))
    assert longer.metric != scratch.metric or longer.curve != scratch.curve


def test_the_added_steps_warm_up_and_decay_on_their_own() -> None:
    run = settings(200)
    assert lr_factor(100, run, start=100) == lr_factor(0, settings(100)) == 0.2  # 5 warmup steps again
    assert lr_factor(150, run, start=100) == lr_factor(50, settings(100))
    assert lr_factor(199, run, start=100) < 1e-3  # decayed by the end, as a run from scratch is


def test_a_state_that_does_not_fit_is_refused_naming_resume(task, space, short) -> None:
    state = TrainState.from_bytes(short.state.to_bytes())
    mismatch = r"resume: (the state was trained with other adapters|\S+ is .* in the state)"
    with pytest.raises(TrainingError, match=mismatch) as e:
        proxy_finetune(task, space.random(5), settings=settings(12), start=state)
    assert e.value.field == "resume"
    with pytest.raises(TrainingError, match="only go on from a step between 1 and 5"):
        proxy_finetune(task, space.random(0), settings=settings(6), start=state)
    with pytest.raises(TrainingError, match="not a ranktune training state"):
        TrainState.from_bytes(b"not a state")
    dmlora = AdapterMethod("dmlora", dmlora=DMLoraOptions(drop_start=0.0, drop_end=0.5, prune_at=(0.5,)))
    with pytest.raises(TrainingError, match="DMLoRA"):
        proxy_finetune(task, space.random(0), dmlora, settings(12), start=state)
