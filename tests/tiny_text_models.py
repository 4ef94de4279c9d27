"""Tiny text-model directories as users have them: random weights from a config, a tokenizer built
here with the `tokenizers` library (byte-level BPE, as GPT-2 and Qwen2 use) and saved as a
``PreTrainedTokenizerFast``, and for the chat models a ChatML template. Offline, a second or so each.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers as T

LM_WORDS = (
    "what is the colour of the sky ? grass snow coal blood sea blue green white black red answer : "
    "question user assistant system you are a helpful bot . hello topic sports food the striker scored "
    "our team won cup chef baked bread soup is hot"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "sea": "blue"}


def byte_bpe_tokenizer(*, chat_template: str | None, bos: bool) -> T.PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``LM_WORDS``; ``bos``: it prepends ``<s>`` as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + 256 + 120, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator([LM_WORDS] * 3 + LM_WORDS.split(), trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
        )
    fast = T.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<|endoftext|>", bos_token="<s>" if bos else None,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
    )  # fmt: skip
    if chat_template:
        fast.chat_template = chat_template
    return fast


def save_causal_lm(path: Path, family: str = "qwen2", *, chat: bool = True) -> Path:
    """A ``Qwen2ForCausalLM`` (ChatML template, no BOS), ``LlamaForCausalLM`` (BOS; ``chat``: with
    the template, else none, so conversations take the plain format) or ``GPT2LMHeadModel`` (its
    linear layers are transformers' ``Conv1D``; no dropout): hidden 32, 2 layers, 64 positions."""
    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer(chat_template=CHATML if chat else None, bos=family == "llama")
    sizes = {
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }  # fmt: skip
    model: T.PreTrainedModel
    if family == "qwen2":
        model = T.Qwen2ForCausalLM(T.Qwen2Config(**sizes))
    elif family == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(**sizes))
    elif family == "gpt2":
        model = T.GPT2LMHeadModel(T.GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=64,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        ))  # fmt: skip
    else:
        raise ValueError(f"no tiny causal LM of family {family!r}")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_bert_classifier(path: Path, labels: list[str] | None = None, num_labels: int = 3) -> Path:
    """A ``BertForSequenceClassification`` with its own head: ``labels`` names its outputs (as a
    checkpoint fine-tuned on them has), else ``num_labels`` generic ones."""
    torch.manual_seed(0)
    tokenizer = byte_bpe_tokenizer(chat_template=None, bos=False)
    names = labels or [f"LABEL_{i}" for i in range(num_labels)]
    config = T.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
    )  # fmt: skip
    T.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def colour_rows(kind: str) -> list[dict[str, object]]:
    """Six "what is the colour of …" examples as prompt/completion or messages records."""
    if kind == "completion":
        return [{"prompt": f"what is the colour of the {k} ? answer :", "completion": f" {v}"}
                for k, v in COLOURS.items()]  # fmt: skip
    return [
        {"messages": [{"role": "user", "content": f"what is the colour of the {k} ?"},
                      {"role": "assistant", "content": v}]}
        for k, v in COLOURS.items()
    ]  # fmt: skip


def write_dataset(root: Path, rows: list[dict[str, object]] | list[str], val: list | None = None) -> Path:
    """``root/train.jsonl`` and ``root/val.jsonl`` (the same rows unless ``val`` is given)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", rows), ("val", rows if val is None else val)):
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (root / f"{name}.jsonl").write_text(text)
    return root
