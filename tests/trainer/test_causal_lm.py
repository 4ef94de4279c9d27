"""Instruction tuning of causal LMs from JSONL: which tokens the loss is on, truncation, the metrics,
bad data, and a plan that trains as planned and reloads into the LM class with every weight matched."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from ranktune.search.paired import decode_outcomes
from ranktune.service.cli import app
from ranktune.trainer.errors import TaskError
from ranktune.trainer.proxy import ProxySettings, proxy_finetune
from ranktune.trainer.sites import discover_sites
from ranktune.trainer.tasks import causal_lm
from ranktune.trainer.tasks.causal_lm import IGNORE, CausalLMTask, trim
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_text_models import colour_rows, save_bert_classifier, save_causal_lm, write_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen2 with a ChatML template."""
    return save_causal_lm(tmp_path_factory.mktemp("models") / "qwen2", "qwen2")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama with a BOS token and no chat template: conversations take the plain format."""
    return save_causal_lm(tmp_path_factory.mktemp("models") / "llama", "llama", chat=False)


def lm_task(data: Path, model: Path) -> CausalLMTask:
    task = load_task(str(data), str(model))
    assert isinstance(task, CausalLMTask)
    return task


def labelled_text(task: CausalLMTask, split: str = "val") -> list[str]:
    return [task.tokenizer.decode([t for t in e.labels if t != IGNORE]) for e in task.examples[split]]


# ---- which tokens the loss is on ----------------------------------------------------------------


def test_the_loss_is_on_the_completion_only(tmp_path: Path, qwen: Path) -> None:
    task = lm_task(write_dataset(tmp_path / "pc", colour_rows("completion")), qwen)
    assert task.metric == "eval_loss" and task.head_modules == () and task.saved_heads == ()
    assert labelled_text(task)[0] == " blue<|im_end|>"  # the completion and the end-of-sequence token
    assert task.tokenizer.decode(task.examples["val"][0].prompt) == "what is the colour of the sky ? answer :"
    model = task.build_model()
    assert not any(p.requires_grad for p in model.parameters())
    # Where the gradient reaches the logits: exactly the positions that predict a completion token.
    model.lm_head.weight.requires_grad_(True)
    logits: list[torch.Tensor] = []

    def keep(_module: object, _inputs: object, out: torch.Tensor) -> None:
        out.retain_grad()
        logits.append(out)

    model.lm_head.register_forward_hook(keep)
    batch = next(task.batches("val", 6, seed=0))
    task.loss(model, batch).backward()
    labels = trim(batch)["labels"]
    reached = logits[0].grad.abs().sum(dim=-1) > 0  # type: ignore[union-attr]
    assert torch.equal(reached[:, :-1], labels[:, 1:] != IGNORE) and not reached[:, -1].any()
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()  # padding is never labelled


def test_conversations_use_the_chat_template_or_the_plain_format(
    tmp_path: Path, qwen: Path, llama: Path
) -> None:
    turns = [{"role": "system", "content": "you are a helpful bot ."},
             {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "what is the colour of the sea ?"},
             {"role": "assistant", "content": "blue"}]  # fmt: skip
    data = write_dataset(tmp_path / "chat", [*colour_rows("chat"), {"messages": turns}])
    templated = lm_task(data, qwen)
    assert labelled_text(templated)[-1] == "hello<|im_end|>\nblue<|im_end|>\n"  # every assistant turn
    last = templated.examples["val"][-1]
    assert templated.tokenizer.decode(last.answer) == "blue<|im_end|>\n"
    assert templated.tokenizer.decode(last.prompt).endswith("the sea ?<|im_end|>\n<|im_start|>assistant\n")
    plain = lm_task(data, llama)
    first = plain.examples["val"][0]
    assert (
        plain.tokenizer.decode(first.ids)
        == "<s>user: what is the colour of the sky ?\nassistant: blue<|endoftext|>"
    )
    assert labelled_text(plain)[0] == " blue<|endoftext|>"
    assert labelled_text(plain)[-1] == " hello<|endoftext|> blue<|endoftext|>"


def test_long_examples_are_cut_and_counted(
    tmp_path: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(causal_lm, "DEFAULT_MAX_SEQ_LEN", 16)
    long = {"prompt": "what is the colour of the sky ? answer :", "completion": " blue" * 12}
    data = write_dataset(tmp_path / "long", [long, *colour_rows("completion")])
    with caplog.at_level(logging.WARNING, logger="ranktune.task"):
        task = lm_task(data, qwen)
    assert task.max_seq_len == 16 and task.truncated == {"train": 1, "val": 1, "test": 1}
    assert "1 of 7 train examples" in caplog.text and "longer than max_seq_len (16 tokens)" in caplog.text
    cut = task.examples["train"][0]
    assert cut.truncated and len(cut.ids) == 16 and cut.answer == ()  # a cut answer cannot be scored
    assert task.tensors("train")["input_ids"].shape[1] == 16


# ---- metrics ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_eval_loss_and_exact_match_after_overfitting(tmp_path: Path, qwen: Path) -> None:
    task = lm_task(write_dataset(tmp_path / "chat", colour_rows("chat")), qwen)
    assert task.metric_directions() == {"eval_loss": "minimize", "exact_match": "maximize"}
    untrained = task.build_model()
    before = float(task.evaluate_outcomes(untrained).mean())
    assert task.exact_match_outcomes(untrained).tolist() == [False] * 6
    result = proxy_finetune(task, None, settings=ProxySettings(steps=150, lr=3e-2, batch_size=6))
    assert result.metric_name == "eval_loss" and result.metric < before / 10
    assert result.metrics == {"eval_loss": result.metric, "exact_match": 1.0}
    assert result.outcomes is not None and result.outcomes.dtype.kind == "f"
    assert result.metric_se == pytest.approx(float(result.outcomes.std(ddof=1)) / math.sqrt(6), rel=1e-5)
    sent = result.to_json()
    assert decode_outcomes(sent["outcomes"]) == pytest.approx(result.outcomes)  # floats travel as float32
    exact = proxy_finetune(task, None, settings=ProxySettings(steps=2), objective="exact_match")
    assert exact.metric_name == "exact_match" and set(exact.metrics) == {"eval_loss", "exact_match"}
    assert exact.outcomes is not None and exact.outcomes.dtype == bool


def test_evaluation_in_chunks_under_the_logits_budget_gives_the_same_figures(
    tmp_path: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large vocabulary (Gemma 3's 262,144 words) must not need all rows' logits at once."""
    task = lm_task(write_dataset(tmp_path / "pc", colour_rows("completion")), qwen)
    torch.manual_seed(0)
    model = task.build_model()
    whole_loss, whole_match = task.evaluate_outcomes(model), task.exact_match_outcomes(model)
    calls: list[int] = []
    forward = model.forward

    def counted(*args: object, **kwargs: torch.Tensor) -> object:  # no logits_to_keep: greedy's fallback
        calls.append(len(kwargs["input_ids"]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counted)
    monkeypatch.setattr(causal_lm, "LOGITS_BUDGET", model.config.vocab_size)  # one row at a time
    torch.testing.assert_close(task.evaluate_outcomes(model), whole_loss)
    assert calls == [1] * task.split_size("val")
    assert torch.equal(task.exact_match_outcomes(model), whole_match)


# ---- bad input ----------------------------------------------------------------------------------

PC = {"prompt": "what is the colour of the sky ?", "completion": " blue"}
USER = {"role": "user", "content": "hello"}
LONG = {"prompt": "what is" + " the sky" * 40, "completion": " blue"}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([PC, {"prompt": "hello"}], r"train\.jsonl, line 2: missing key 'completion'"),
        ([PC, {**PC, "completion": ""}], r"line 2: key 'completion' must be a non-empty string"),
        ([{"messages": [USER]}], r"line 1: key 'messages': the last message must be the assistant's"),
        ([{"messages": []}], r"line 1: key 'messages' must be a non-empty list"),
        ([{"messages": [USER, {"role": "assistant"}]}], r"line 1: key 'messages', message 1: missing key"),
        ([{"messages": [{"role": "assistant", "content": "hi"}]}], r"line 1: .*starts with the assistant"),
        ([{"messages": [USER, {"role": "assistant", "content": 3}]}], r"message 1: 'content' must be a"),
        ([LONG], r"line 1: key 'prompt': the prompt takes \d+ tokens and max_seq_len is 64, so nothing"),
    ],
)  # fmt: skip
def test_bad_records_are_named(tmp_path: Path, qwen: Path, rows: list, expected: str) -> None:
    data = write_dataset(tmp_path / "bad", rows, val=[PC])
    with pytest.raises(TaskError, match=expected) as caught:
        load_task(str(data), str(qwen))
    assert caught.value.field == "task"


def test_instruction_data_needs_a_causal_lm(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "pc", colour_rows("completion"))
    classifier = save_bert_classifier(tmp_path / "bert")
    for model, expected in [
        (str(classifier), r"is a BertForSequenceClassification, not a causal language model"),
        ("builtin:minilm", r"is a BertModel, not a causal language model"),
        ("builtin:tiny-vlm", r"is a vision-language model but .* holds instruction records"),
    ]:
        with pytest.raises(TaskError, match=expected) as caught:
            load_task(str(data), model)
        assert caught.value.field == "model"


def test_cli_names_a_prompt_with_nothing_left_to_learn(tmp_path: Path, qwen: Path) -> None:
    data = write_dataset(tmp_path / "bad", [{"prompt": "the sky" * 40, "completion": " blue"}], val=[PC])
    result = runner.invoke(app, ["train", "--model", str(qwen), "--task", str(data), "--uniform-rank", "2",
                                 "--out", str(tmp_path / "out")])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "line 1: key 'prompt'" in lines[0] and "max_seq_len is 64" in lines[0]


# ---- from a plan to PEFT's reload ---------------------------------------------------------------


def test_a_plan_trains_as_planned_and_reloads_into_the_lm_class(tmp_path: Path, qwen: Path) -> None:
    from peft import PeftModel

    sites = discover_sites(str(qwen))
    assert sites and all(s.name.startswith("model.layers.") for s in sites)  # no lm_head, no embeddings
    assert {s.kind for s in sites} == {"q", "k", "v", "o", "gate", "up", "down"}
    plan = runner.invoke(app, ["plan", "--model", str(qwen), "--budget-rank", "4", "--grid", "0,2,4,8",
                               "--strategy", "random", "--format", "json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    (tmp_path / "plan.json").write_text(plan.stdout)
    planned = {site["name"]: site["rank"] for site in json.loads(plan.stdout)["sites"] if site["rank"]}
    data = write_dataset(tmp_path / "chat", colour_rows("chat"))
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--model", str(qwen), "--task", str(data), "--schedule",
                                 str(tmp_path / "plan.json"), "--steps", "3", "--batch-size", "6",
                                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "eval_loss" in result.output and "exact_match" in result.output
    report = json.loads((out / "ranktune_result.json").read_text())
    base = T.AutoModelForCausalLM.from_pretrained(qwen)
    loaded = PeftModel.from_pretrained(base, str(out))
    keys = loaded.load_adapter(str(out), adapter_name="check")
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    ranks = {n.removeprefix("base_model.model."): m.r["default"]
             for n, m in loaded.named_modules() if hasattr(m, "lora_A")}  # fmt: skip
    assert ranks == planned
    loaded.set_adapter("default")
    task = lm_task(data, qwen)
    assert float(task.evaluate_outcomes(loaded).mean()) == pytest.approx(report["metric"], rel=1e-5)
