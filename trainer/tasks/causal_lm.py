"""Instruction tuning of a causal LM on a user's JSONL data (``trainer.tasks.jsonl_lm`` renders it).

Every example is tokenized once, when the task is made, so bad data fails at submission naming its
line. The loss is on the tokens of the trained spans only (the completion, the assistant turns); an
example longer than ``max_seq_len`` tokens is cut at the end and the number cut per split is logged;
one whose prompt leaves no trained token within ``max_seq_len`` is an error. ``max_seq_len`` is
``min(512, the model's positions, the tokenizer's limit)`` unless a run sets ``proxy.max_seq_len``
(at most the model's positions); the examples are then tokenized again.

Metrics:

- ``eval_loss``, the default objective (lower is better): per example, the mean cross-entropy of its
  trained tokens; the metric is their mean over examples, so two runs pair example by example.
- ``exact_match`` (higher is better): whether greedy decoding after the prompt reproduces the answer
  (the last trained span: the completion, or the last assistant turn as the template writes it)
  token for token. Meant for short answers: one longer than ``MAX_ANSWER_TOKENS`` tokens, or cut by
  ``max_seq_len``, counts as a miss. The proxy measures it once, at the end of a run.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import (
    SPLITS,
    Batch,
    Direction,
    Split,
    Task,
    check_max_seq_len,
    evaluating,
    model_device,
    next_token_labels,
    sha256_of,
    tensor_batches,
    to_device,
)
from ranktune.trainer.tasks.jsonl_lm import LMKind, Rendered, render
from ranktune.trainer.tasks.jsonl_records import Record

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_MAX_SEQ_LEN = 512
LOGITS_BUDGET = 2**27  # logits one evaluation forward pass may hold (512 MiB in fp32)
MAX_ANSWER_TOKENS = 64
IGNORE = -100  # the label of a token the loss skips
log = logging.getLogger("ranktune.task")


@dataclass(frozen=True)
class Example:
    ids: tuple[int, ...]  # cut at max_seq_len
    labels: tuple[int, ...]  # the id where the loss is on the token, IGNORE elsewhere
    prompt: tuple[int, ...]  # the tokens before the answer
    answer: tuple[int, ...]  # the answer's tokens; () when it cannot be scored (cut, too long)
    truncated: bool


def encode(record: Record, kind: LMKind, rendered: Rendered, tokenizer: Any, max_seq_len: int) -> Example:
    encoded = tokenizer(
        rendered.text, add_special_tokens=rendered.add_special_tokens, return_offsets_mapping=True
    )
    ids: list[int] = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    inside = [
        [i for i, (first, last) in enumerate(offsets) if last > start and first < end]
        for start, end in rendered.spans
    ]
    trained = {i for span in inside for i in span} - {0}  # the first token has nothing to predict it
    first = min(trained, default=len(ids))
    if first >= max_seq_len or not trained:
        key, what = ("prompt", "completion") if kind == "completion" else ("messages", "assistant's turns")
        raise TaskError(
            f"task: {record.where}: key {key!r}: the prompt takes {first} tokens and max_seq_len is "
            f"{max_seq_len}, so nothing of the {what} is left to learn; shorten the prompt"
        )
    kept = ids[:max_seq_len]
    answer_at = inside[-1]
    scorable = (
        bool(answer_at) and answer_at[0] > 0 and answer_at[-1] < max_seq_len
        and len(answer_at) <= MAX_ANSWER_TOKENS
    )  # fmt: skip
    return Example(
        ids=tuple(kept),
        labels=tuple(token if i in trained else IGNORE for i, token in enumerate(kept)),
        prompt=tuple(ids[: answer_at[0]]) if scorable else (),
        answer=tuple(ids[answer_at[0] : answer_at[-1] + 1]) if scorable else (),
        truncated=len(ids) > max_seq_len,
    )


def default_max_seq_len(model_dir: Path, tokenizer: Any) -> int:
    """``DEFAULT_MAX_SEQ_LEN``, or less where the model's positions or its tokenizer stop sooner."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True).get_text_config()
    limits = [DEFAULT_MAX_SEQ_LEN, getattr(config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    return min(int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 10**7)


def trim(batch: Batch) -> Batch:
    """The batch without the padding columns every row has (rows are padded on the right)."""
    length = int(batch["attention_mask"].sum(dim=1).max())
    return {key: value[:, :length] for key, value in batch.items()}


def token_losses(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of every next-token prediction, and where the loss is on it (labels set).

    Without gradients (evaluation) the rows go through in chunks of at most ``LOGITS_BUDGET`` logits:
    a 262,144-word vocabulary (Gemma 3) over 256 rows of 200 tokens would otherwise need 51 GiB.
    """
    import torch
    import torch.nn.functional as F

    batch = to_device(trim(batch), model_device(model))
    rows, length = batch["input_ids"].shape
    vocab = int(getattr(model.config.get_text_config(), "vocab_size", 0) or 1)  # type: ignore[union-attr,operator]
    step = rows if torch.is_grad_enabled() else max(1, LOGITS_BUDGET // max(1, length * vocab))
    losses = []
    for start in range(0, rows, step):
        logits = model(
            input_ids=batch["input_ids"][start : start + step],
            attention_mask=batch["attention_mask"][start : start + step],
            use_cache=False,
        ).logits
        labels = batch["labels"][start : start + step, 1:]
        losses.append(F.cross_entropy(
            logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none"
        ).view(labels.shape))  # fmt: skip
        del logits
    labels = batch["labels"][:, 1:]
    return torch.cat(losses), labels != IGNORE


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one batch padded on the left (ids and attention mask), as ``greedy`` takes them."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def greedy(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, steps: int
) -> torch.Tensor:
    """``steps`` greedy tokens after left-padded prompts (no early stop: every row gets ``steps``)."""
    import torch
    from transformers.modeling_outputs import CausalLMOutputWithPast

    # transformers 5.2x renamed ``past_key_values`` to ``cache``, in the forward and the output alike
    cache_name = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
    device = model_device(model)
    ids, mask = input_ids.to(device), attention_mask.to(device)
    positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    # Only the last position's logits are read: with a large vocabulary the prompt's would dominate memory.
    last_only = (
        {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    )
    past = None
    tokens = []
    for _ in range(steps):
        output = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{cache_name: past},
            **last_only,
        )
        past = getattr(output, cache_name)
        ids = output.logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens.append(ids)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = positions[:, -1:] + 1
    return torch.cat(tokens, dim=1).cpu()


class CausalLMTask(Task):
    """A causal LM fine-tuned on prompt/completion or conversation records; no task head."""

    name: ClassVar[str] = "jsonl:causal-lm"
    metric: ClassVar[str] = "eval_loss"
    description: ClassVar[str] = (
        "Instruction tuning of a causal LM from a user's JSONL files (prompt/completion or messages); "
        "metrics: eval_loss (the default objective, lower is better) and exact_match."
    )

    def __init__(
        self,
        model_dir: Path,
        splits: dict[Split, list[Record]],
        source: Path,
        kind: LMKind,
        max_seq_len: int | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.source = source
        self.kind = kind
        self.records = splits
        self.tokenizer = _load_tokenizer(model_dir)
        self.default_max_seq_len = max_seq_len or default_max_seq_len(model_dir, self.tokenizer)
        self._encode(self.default_max_seq_len)

    def _encode(self, max_seq_len: int) -> None:
        """Tokenize every example, cut at ``max_seq_len`` tokens (fails naming a record with nothing
        left to learn, leaving the task as it was)."""
        examples = {
            split: [encode(r, self.kind, render(r, self.kind, self.tokenizer), self.tokenizer, max_seq_len)
                    for r in records]
            for split, records in self.records.items()
        }  # fmt: skip
        self.max_seq_len, self.examples = max_seq_len, examples
        self.truncated = {split: sum(e.truncated for e in rows) for split, rows in examples.items()}
        for split, count in self.truncated.items():
            if count:
                log.warning(
                    "task: %d of %d %s examples of %s are longer than max_seq_len (%d tokens): cut short",
                    count, len(examples[split]), split, self.source, max_seq_len,
                )  # fmt: skip
        self._tensors: dict[Split, Batch] = {}

    def set_max_seq_len(self, max_seq_len: int | None) -> None:
        if max_seq_len is not None:
            check_max_seq_len(max_seq_len, self.model_dir)
        wanted = max_seq_len or self.default_max_seq_len
        if wanted == self.max_seq_len:
            return
        try:
            self._encode(wanted)
        except TaskError as e:
            if max_seq_len is None:
                raise
            raise TaskError(f"proxy.max_seq_len: {max_seq_len} is too short ({e})", field="proxy") from e

    def loss_items(self, batch: Batch) -> int:
        return next_token_labels(batch, IGNORE)

    def metric_directions(self) -> dict[str, Direction]:
        return {"eval_loss": "minimize", "exact_match": "maximize"}

    def build_model(self) -> nn.Module:
        from ranktune.trainer.models import load_pretrained

        model = load_pretrained(self.model_dir)
        model.requires_grad_(False)
        return model

    def tensors(self, split: Split) -> Batch:
        """Every example of ``split`` padded on the right to the longest; labels IGNORE but where trained."""
        import torch

        if split not in self._tensors:
            examples = self.examples[split]
            length = max(len(e.ids) for e in examples)
            ids = torch.full((len(examples), length), int(self.tokenizer.pad_token_id or 0))
            mask = torch.zeros((len(examples), length), dtype=torch.long)
            labels = torch.full((len(examples), length), IGNORE)
            for row, example in enumerate(examples):
                n = len(example.ids)
                ids[row, :n] = torch.tensor(example.ids)
                mask[row, :n] = 1
                labels[row, :n] = torch.tensor(example.labels)
            self._tensors[split] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        return self._tensors[split]

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        return tensor_batches(self.tensors(split), split, batch_size, seed)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        losses, trained = token_losses(model, batch)
        return losses[trained].mean()

    def evaluate_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        """Per example, the mean loss of its trained tokens (a float: ``eval_loss``'s outcome)."""
        import torch

        values = []
        with evaluating(model):
            for batch in self.batches(split, batch_size, seed=0):
                losses, trained = token_losses(model, batch)
                values.append(((losses * trained).sum(dim=1) / trained.sum(dim=1)).cpu())
        return torch.cat(values) if values else torch.zeros(0)

    def metric_outcomes(
        self, model: nn.Module, metric: str, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        if metric == "exact_match":
            return self.exact_match_outcomes(model, split, batch_size)
        return super().metric_outcomes(model, metric, split, batch_size)

    def exact_match_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        """Per example: does greedy decoding after its prompt give its answer exactly?"""
        import torch

        right: list[bool] = []
        with evaluating(model):
            examples = self.examples[split]
            for start in range(0, len(examples), batch_size):
                right += self._matches(model, examples[start : start + batch_size])
        return torch.tensor(right, dtype=torch.bool)

    def _matches(self, model: nn.Module, examples: Sequence[Example]) -> list[bool]:

        scored = [e for e in examples if e.answer]
        if not scored:
            return [False] * len(examples)
        ids, mask = left_padded([e.prompt for e in scored], int(self.tokenizer.pad_token_id or 0))
        generated = greedy(model, ids, mask, max(len(e.answer) for e in scored))
        matches = iter(
            generated[row, : len(e.answer)].tolist() == list(e.answer) for row, e in enumerate(scored)
        )
        return [bool(e.answer) and next(matches) for e in examples]

    def split_size(self, split: Split) -> int:
        return len(self.examples[split])

    def data_sha256(self) -> str:
        return sha256_of(self.kind, self.max_seq_len, *([r.data for r in self.records[s]] for s in SPLITS))


def _load_tokenizer(model_dir: Path) -> Any:
    from ranktune.trainer.tasks.classification import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except Exception as e:  # the tokenizer is the model's own files and code: any failure is the model's
        raise TaskError(
            f"model: cannot load the tokenizer of {model_dir} ({type(e).__name__}: {e})", field="model"
        ) from e
    if not tokenizer.is_fast:
        raise TaskError(
            f"model: {model_dir} has a slow tokenizer; instruction tuning needs a fast one "
            "(a tokenizer.json), to find which tokens the loss is on",
            field="model",
        )
    return tokenizer
