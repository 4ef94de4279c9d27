"""Instruction data for a causal LM: JSONL records rendered to text, with the spans the loss is on.

Two kinds of record (``trainer.tasks.jsonl`` tells them apart by their keys):

- ``{"prompt": "...", "completion": "..."}``: the text is the prompt and the completion exactly as
  given, joined without a separator (put a space or a newline at the end of the prompt if the model
  should see one), then the tokenizer's end-of-sequence token. The loss is on the completion and
  the end-of-sequence token.
- ``{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}``:
  a conversation that starts with a system or user message and ends with the assistant's answer.
  The model's chat template renders it (as ``tokenizer.apply_chat_template`` does); the loss is on
  every assistant turn as the template writes it (its end-of-turn marker included). Without a chat
  template the plain format is one line per message, ``"<role>: <content>"``, with the
  end-of-sequence token after each assistant turn, which is what the loss is on.

The last trained span (the completion, the last assistant turn) is the answer ``exact_match`` scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.jsonl_records import Record

LMKind = Literal["completion", "chat"]
ASSISTANT = "assistant"


@dataclass(frozen=True)
class Rendered:
    """A record as text, the character spans the loss is on, and whether the tokenizer should add
    its own special tokens (a chat template writes them itself)."""

    text: str
    spans: tuple[tuple[int, int], ...]
    add_special_tokens: bool


def check_messages(record: Record) -> None:
    """A ``messages`` record: a list of {role, content} objects, user first, the assistant last."""
    messages: Any = record.data["messages"]
    if not isinstance(messages, list) or not messages:
        raise TaskError(f"task: {record.where}: key 'messages' must be a non-empty list of messages, "
                        f"got {json.dumps(messages)[:80]}")  # fmt: skip
    for i, message in enumerate(messages):
        where = f"task: {record.where}: key 'messages', message {i}"
        if not isinstance(message, dict):
            raise TaskError(f"{where}: expected an object with the keys role and content")
        for key in ("role", "content"):
            if key not in message:
                raise TaskError(f"{where}: missing key {key!r}")
            if not isinstance(message[key], str) or not message[key].strip():
                raise TaskError(
                    f"{where}: {key!r} must be a non-empty string, got {json.dumps(message[key])}"
                )
    if messages[0]["role"] == ASSISTANT:
        raise TaskError(f"task: {record.where}: key 'messages': the conversation starts with the assistant; "
                        "start it with a system or user message")  # fmt: skip
    if messages[-1]["role"] != ASSISTANT:
        raise TaskError(f"task: {record.where}: key 'messages': the last message must be the assistant's "
                        f"answer (role 'assistant'), got role {messages[-1]['role']!r}")  # fmt: skip


def render(record: Record, kind: LMKind, tokenizer: Any) -> Rendered:
    eos = tokenizer.eos_token or ""
    if kind == "completion":
        prompt, completion = record.data["prompt"], record.data["completion"]
        text = prompt + completion + eos
        return Rendered(text, ((len(prompt), len(text)),), add_special_tokens=True)
    messages: list[dict[str, str]] = record.data["messages"]  # type: ignore[assignment]
    if getattr(tokenizer, "chat_template", None):
        return _render_with_template(record, messages, tokenizer)
    text, spans = "", []
    for message in messages:
        text += ("\n" if text else "") + f"{message['role']}: "
        if message["role"] == ASSISTANT:
            spans.append((len(text), len(text) + len(message["content"]) + len(eos)))
            text += message["content"] + eos
        else:
            text += message["content"]
    return Rendered(text, tuple(spans), add_special_tokens=True)


def _template(record: Record, tokenizer: Any, messages: list[dict[str, str]], prompt: bool) -> str:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    except Exception as e:  # a template may raise on purpose (e.g. "roles must alternate")
        raise TaskError(f"task: {record.where}: key 'messages': the model's chat template refused the "
                        f"conversation ({type(e).__name__}: {e})") from e  # fmt: skip
    return str(text)


def _render_with_template(record: Record, messages: list[dict[str, str]], tokenizer: Any) -> Rendered:
    """Each assistant turn's span is what rendering it adds to the conversation before it (with the
    generation prompt); a template that rewrites earlier turns falls back to the turn's content."""
    text = _template(record, tokenizer, messages, prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        before = _template(record, tokenizer, messages[:i], prompt=True)
        upto = _template(record, tokenizer, messages[: i + 1], prompt=False)
        if upto.startswith(before) and text.startswith(upto) and len(before) >= cursor:
            span = (len(before), len(upto))
        else:
            start = text.find(message["content"], cursor)
            if start < 0:
                raise TaskError(f"task: {record.where}: key 'messages', message {i}: the model's chat "
                                "template does not write the assistant's content as given")  # fmt: skip
            span = (start, start + len(message["content"]))
        spans.append(span)
        cursor = span[1]
    return Rendered(text, tuple(spans), add_special_tokens=False)
