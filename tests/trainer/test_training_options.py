"""The options for larger models: gradient accumulation (micro-batches weighted by what their loss
averages over), activation checkpointing (the same gradients reach the adapters), ``max_seq_len``
per task kind, precision, and the peak memory a run reports. CUDA checks carry the ``gpu`` marker."""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import pytest
import torch
import transformers as T
from torch import nn

from ranktune.search.schedule import RankSchedule
from ranktune.trainer.adapters import AdapterMethod, DMLoraOptions, inject_adapters
from ranktune.trainer.adapters.dmlora import DMLoraController, DMLoraLinear
from ranktune.trainer.adapters.inject import adapter_layers
from ranktune.trainer.errors import TaskError, TrainingError
from ranktune.trainer.proxy import ProxySettings, proxy_finetune, train_step
from ranktune.trainer.runtime import enable_checkpointing, resolve_precision
from ranktune.trainer.sites import discover_sites
from ranktune.trainer.tasks.causal_lm import CausalLMTask
from ranktune.trainer.tasks.classification import TextClassificationTask
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_models import TINY_MODELS
from tests.tiny_text_models import save_bert_classifier, save_causal_lm, write_dataset

CPU = torch.device("cpu")
# Completions of different lengths, so micro-batches hold different numbers of trained tokens.
ANSWERS = ["blue", "green grass", "white snow is white", "black", "red blood red", "blue sea", "hot soup",
           "our team won the cup"]  # fmt: skip
ROWS = [
    {"prompt": f"what is the colour of item {i} ? answer :", "completion": f" {a}"}
    for i, a in enumerate(ANSWERS)
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_causal_lm(tmp_path_factory.mktemp("models") / "qwen2", "qwen2")


@pytest.fixture(scope="module")
def lm_task(qwen: Path, tmp_path_factory: pytest.TempPathFactory) -> CausalLMTask:
    task = load_task(str(write_dataset(tmp_path_factory.mktemp("data") / "lm", ROWS)), str(qwen))
    assert isinstance(task, CausalLMTask)
    return task


def adapted(task: CausalLMTask, rank: int = 2) -> tuple[nn.Module, RankSchedule]:
    torch.manual_seed(0)
    model = task.build_model()
    schedule = RankSchedule.uniform(discover_sites(model), rank)
    inject_adapters(model, schedule)
    return model, schedule


def perturb(model: nn.Module) -> None:
    """Non-zero B factors, so that every adapter factor gets a gradient."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            for name, param in layer.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=g) * 0.2)


def adapter_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


# ---- gradient accumulation ---------------------------------------------------------------------


def test_accumulated_micro_batches_train_as_one_big_batch(lm_task: CausalLMTask) -> None:
    model, _ = adapted(lm_task)
    perturb(model)
    model.train()
    big = [next(lm_task.batches("train", 8, seed=0))]
    stream = lm_task.batches("train", 4, seed=0)
    small = [next(stream), next(stream)]  # the same 8 examples: one permutation, cut in two
    assert sorted(big[0]["input_ids"].tolist()) == sorted(torch.cat([b["input_ids"] for b in small]).tolist())
    counts = [lm_task.loss_items(b) for b in small]
    assert counts[0] != counts[1] and sum(counts) == lm_task.loss_items(big[0])  # trained tokens
    no_autocast = contextlib.nullcontext()
    big_loss = train_step(lm_task, model, big, CPU, no_autocast, 1)
    big_grads = adapter_grads(model)
    model.zero_grad(set_to_none=True)
    small_loss = train_step(lm_task, model, small, CPU, no_autocast, 1)
    assert small_loss == pytest.approx(big_loss, rel=1e-6)
    small_grads = adapter_grads(model)
    assert big_grads.keys() == small_grads.keys() and len(big_grads) == 2 * 14
    for name, grad in big_grads.items():
        torch.testing.assert_close(small_grads[name], grad, rtol=1e-4, atol=1e-7)
    # An unweighted mean of the two micro-batch losses would not be the big batch's loss.
    with torch.no_grad():
        plain = sum(float(lm_task.loss(model, b)) for b in small) / 2
    assert abs(plain - big_loss) > 1e-4


def test_a_step_is_one_optimizer_step(lm_task: CausalLMTask, monkeypatch: pytest.MonkeyPatch) -> None:
    losses: list[float] = []
    controller_steps: list[int] = []
    reported: list[int] = []
    real_loss, real_on_step = lm_task.loss, DMLoraController.on_step

    def loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        losses.append(1.0)
        return real_loss(model, batch)

    monkeypatch.setattr(lm_task, "loss", loss)

    def on_step(self: DMLoraController, step: int, optimizer: torch.optim.Optimizer) -> list:
        controller_steps.append(step)
        return real_on_step(self, step, optimizer)

    monkeypatch.setattr(DMLoraController, "on_step", on_step)
    schedule = RankSchedule.uniform(discover_sites(lm_task.build_model()), 4)
    settings = ProxySettings(steps=4, batch_size=2, grad_accum_steps=3, eval_every=2)
    result = proxy_finetune(lm_task, schedule, AdapterMethod("dmlora", dmlora=DMLoraOptions(branches=2)),
                            settings, on_step=lambda step, loss: reported.append(step))  # fmt: skip
    assert len(losses) == 12 and controller_steps == [0, 1, 2, 3] and reported == [1, 2, 3, 4]
    assert [m.step for m in result.curve] == [2, 4] and result.steps_done == 4


# ---- activation checkpointing --------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["lora", "dmlora"])
def test_checkpointing_gives_the_adapters_the_same_gradients(arch: str, method: str) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS[arch]()
    schedule = RankSchedule.uniform(discover_sites(model), 4)
    inject_adapters(model, schedule, AdapterMethod(method, dmlora=DMLoraOptions(branches=2)))  # type: ignore[arg-type]
    perturb(model)
    for layer in adapter_layers(model).values():
        if isinstance(layer, DMLoraLinear):
            layer.drop_probability = 0.5  # branches dropped at random: the recompute must drop the same
    twin = copy.deepcopy(model)
    enable_checkpointing(twin)
    ids = torch.randint(1, 60, (2, 9), generator=torch.Generator().manual_seed(1))
    grads, calls = [], []
    for m in (model, twin):
        count = [0]
        first = next(iter(adapter_layers(m).values()))
        first.register_forward_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        m.train()
        torch.manual_seed(3)
        m(input_ids=ids, labels=ids).loss.backward()
        grads.append(adapter_grads(m))
        calls.append(count[0])
    assert calls == [1, 2]  # the checkpointed block ran again in the backward pass
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        assert grad.abs().sum() > 0 or "lora_A" in name  # a dropped DMLoRA branch may get nothing
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-5, atol=1e-7)


class NoCheckpointing(T.LlamaForCausalLM):
    supports_gradient_checkpointing = False


def test_a_model_that_cannot_checkpoint_is_refused(lm_task: CausalLMTask, monkeypatch) -> None:
    with pytest.raises(TrainingError, match=r"^proxy\.gradient_checkpointing: Sequential does not"):
        enable_checkpointing(nn.Sequential(nn.Linear(2, 2)))
    model = NoCheckpointing(TINY_MODELS["llama"]().config)
    monkeypatch.setattr(lm_task, "build_model", lambda: model)
    schedule = RankSchedule.uniform(discover_sites(model), 2)
    with pytest.raises(TrainingError, match=r"^proxy\.gradient_checkpointing: NoCheckpointing") as caught:
        proxy_finetune(lm_task, schedule, settings=ProxySettings(steps=1, gradient_checkpointing=True))
    assert caught.value.field == "proxy"


# ---- max_seq_len per task kind -------------------------------------------------------------------


def test_max_seq_len_recuts_a_causal_lm_task_and_restores_its_default(lm_task: CausalLMTask) -> None:
    default, fingerprint = lm_task.max_seq_len, lm_task.data_sha256()
    assert default == 64  # min(512, the model's 64 positions)
    schedule = RankSchedule.uniform(discover_sites(lm_task.build_model()), 2)
    result = proxy_finetune(lm_task, schedule, settings=ProxySettings(steps=1, batch_size=4, max_seq_len=18))
    assert result.steps_done == 1 and lm_task.max_seq_len == 18
    assert lm_task.tensors("train")["input_ids"].shape[1] <= 18 and lm_task.truncated["train"] > 0
    assert lm_task.data_sha256() != fingerprint
    lm_task.set_max_seq_len(None)
    assert lm_task.max_seq_len == default and lm_task.data_sha256() == fingerprint
    with pytest.raises(TaskError, match=r"^proxy\.max_seq_len: 65 is more than the 64 positions"):
        lm_task.set_max_seq_len(65)
    too_short = r"^proxy\.max_seq_len: 4 is too short \(task: .*, line 1: key 'prompt': the prompt takes"
    with pytest.raises(TaskError, match=too_short) as caught:
        lm_task.set_max_seq_len(4)
    assert caught.value.field == "proxy"
    assert lm_task.max_seq_len == default and lm_task.data_sha256() == fingerprint  # left as it was


def test_max_seq_len_cuts_a_text_classifiers_input(tmp_path: Path) -> None:
    model = save_bert_classifier(tmp_path / "bert", ["cold", "hot"])
    rows = [{"text": "the soup is hot and the chef baked bread " * 3, "label": "hot"},
            {"text": "snow is white", "label": "cold"}] * 5  # fmt: skip
    task = load_task(str(write_dataset(tmp_path / "cls", rows)), str(model))
    assert isinstance(task, TextClassificationTask)
    full = task.tensors("train")["input_ids"].shape[1]
    task.set_max_seq_len(6)
    assert task.tensors("train")["input_ids"].shape[1] == 6 < full
    task.set_max_seq_len(None)
    assert task.tensors("train")["input_ids"].shape[1] == full
    with pytest.raises(TaskError, match=r"^proxy\.max_seq_len: 100 is more than the 64 positions"):
        task.set_max_seq_len(100)


def test_a_vqa_task_has_no_text_to_cut() -> None:
    task = load_task("builtin:digits-vqa", "builtin:tiny-vlm")
    task.set_max_seq_len(None)
    with pytest.raises(TaskError, match=r"^proxy\.max_seq_len: builtin:digits-vqa has no text it could cut"):
        task.set_max_seq_len(32)


# ---- precision, settings and peak memory --------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field"),
    [({"grad_accum_steps": 0}, "grad_accum_steps"), ({"max_seq_len": 0}, "max_seq_len"),
     ({"max_seq_len": True}, "max_seq_len"), ({"precision": "fp16"}, "precision"),
     ({"gradient_checkpointing": "yes"}, "gradient_checkpointing")],
)  # fmt: skip
def test_invalid_options_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(TrainingError, match=rf"^proxy\.{field}: "):
        ProxySettings(**values)


def test_precision_on_cpu_is_fp32_unless_bf16_is_asked_for(lm_task: CausalLMTask) -> None:
    assert resolve_precision(CPU, "auto") == resolve_precision(CPU, "fp32") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"
    schedule = RankSchedule.uniform(discover_sites(lm_task.build_model()), 2)
    runs = {p: proxy_finetune(lm_task, schedule, settings=ProxySettings(steps=2, batch_size=4, precision=p))
            for p in ("auto", "bf16")}  # fmt: skip
    assert runs["auto"].precision == "fp32" and runs["bf16"].precision == "bf16"
    losses = [run.curve[-1].loss for run in runs.values()]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[0] != losses[1]  # bf16 autocast ran
    model = runs["bf16"].model
    assert model is not None and all(p.dtype == torch.float32 for p in model.parameters())


def _process_peak() -> int:
    return int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) * 1024  # type: ignore[union-attr]


def test_cpu_peak_memory_is_the_runs_own_not_the_process_lifetimes(lm_task: CausalLMTask) -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("the process's peak resident set size cannot be reset here")
    hog = torch.ones(300 * 2**20 // 4)  # 300 MiB, touched, then given back
    del hog
    lifetime = _process_peak()
    schedule = RankSchedule.uniform(discover_sites(lm_task.build_model()), 2)
    result = proxy_finetune(lm_task, schedule, settings=ProxySettings(steps=1, batch_size=4))
    assert result.peak_memory_bytes is not None and 0 < result.peak_memory_bytes < lifetime - 200 * 2**20


@pytest.mark.gpu
def test_cuda_runs_bf16_by_default_and_reports_the_devices_peak(lm_task: CausalLMTask) -> None:
    schedule = RankSchedule.uniform(discover_sites(lm_task.build_model()), 2)
    runs = {p: proxy_finetune(lm_task, schedule, device="cuda",
                              settings=ProxySettings(steps=2, batch_size=4, precision=p, grad_accum_steps=2,
                                                     gradient_checkpointing=p == "bf16"))
            for p in ("auto", "fp32", "bf16")}  # fmt: skip
    assert (
        runs["auto"].precision == "bf16"
        and runs["fp32"].precision == "fp32"
        and runs["bf16"].precision == "bf16"
    )
    for run in runs.values():
        assert (
            run.device.startswith("cuda") and run.steps_done == 2 and torch.isfinite(torch.tensor(run.metric))
        )
        assert run.peak_memory_bytes is not None and 0 < run.peak_memory_bytes < 2**30


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["lora", "dmlora"])
def test_checkpointing_on_cuda_under_bf16_gives_the_same_gradients(method: str) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS["llama"]()
    inject_adapters(model, RankSchedule.uniform(discover_sites(model), 4), AdapterMethod(method))  # type: ignore[arg-type]
    perturb(model)
    twin = copy.deepcopy(model)
    enable_checkpointing(twin)
    ids = torch.randint(1, 60, (2, 9), device="cuda")
    grads = []
    for m in (model, twin):
        m.cuda().train()
        torch.manual_seed(3)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=ids, labels=ids).loss
        loss.backward()
        grads.append(adapter_grads(m))
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-3, atol=1e-5)
