"""Tiny configs of every architecture the site rules must get right, built offline in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import transformers as T


def tiny_llama_config() -> T.LlamaConfig:
    return T.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip


def tiny_clip_vision_config() -> T.CLIPVisionConfig:
    return T.CLIPVisionConfig(
        hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
        image_size=28, patch_size=7, num_channels=1,
    )  # fmt: skip


def tiny_llava() -> T.PreTrainedModel:
    config = T.LlavaConfig(
        vision_config=tiny_clip_vision_config(), text_config=tiny_llama_config(),
        image_token_id=63, vision_feature_layer=-1,
    )  # fmt: skip
    return T.LlavaForConditionalGeneration(config)


def tiny_idefics3() -> T.PreTrainedModel:
    config = T.Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 28, "patch_size": 7},
        text_config=tiny_llama_config().to_dict(), scale_factor=2, image_token_id=63,
    )  # fmt: skip
    return T.Idefics3ForConditionalGeneration(config)


def tiny_qwen2_vl() -> T.PreTrainedModel:
    config = T.Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2,
                       "patch_size": 7, "spatial_merge_size": 2, "temporal_patch_size": 2},
        text_config={"vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2,
                     "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
                     "bos_token_id": 0, "eos_token_id": 1},
        image_token_id=63, video_token_id=62, vision_start_token_id=61,
    )  # fmt: skip
    return T.Qwen2VLForConditionalGeneration(config)


def tiny_llama() -> T.PreTrainedModel:
    return T.LlamaForCausalLM(tiny_llama_config())


def tiny_gemma3() -> T.PreTrainedModel:
    """Gemma 3's text model (``gemma3_text``, as google/gemma-3-270m): sliding and full attention."""
    config = T.Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=64, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, bos_token_id=2, eos_token_id=1,
    )  # fmt: skip
    return T.Gemma3ForCausalLM(config)


def tiny_bert() -> T.PreTrainedModel:
    """MiniLM's architecture (BERT) at a tiny size, with a classification head that must be skipped."""
    config = T.BertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, num_labels=3,
    )  # fmt: skip
    return T.BertForSequenceClassification(config)


def tiny_vit() -> T.PreTrainedModel:
    config = T.ViTConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        image_size=28, patch_size=7, num_channels=1, num_labels=10,
    )  # fmt: skip
    return T.ViTForImageClassification(config)


def tiny_gpt2() -> T.PreTrainedModel:
    """GPT-2: its linear layers are transformers' ``Conv1D`` (weights stored in×out); no dropout."""
    config = T.GPT2Config(
        vocab_size=64, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=64,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return T.GPT2LMHeadModel(config)


TINY_MODELS: dict[str, Callable[[], T.PreTrainedModel]] = {
    "llava": tiny_llava,
    "idefics3": tiny_idefics3,
    "qwen2_vl": tiny_qwen2_vl,
    "llama": tiny_llama,
    "gemma3": tiny_gemma3,
    "gpt2": tiny_gpt2,
    "bert": tiny_bert,
    "vit": tiny_vit,
}


# ---- Vision-language model directories with their real processors ------------------------------
# Each save_* writes what a user's model directory holds: config and random weights, a tokenizer
# trained here with the `tokenizers` library in the family's style (byte-level BPE, or pieces with
# "▁" for spaces and byte fallback) and loaded by its real class, the family's real image processor
# and processor classes, and a chat template shaped like the real one. Images are 28 px a side (the
# smallest each processor accepts at these patch sizes); every tower has 2 layers of width 32.

VLM_WORDS = " ".join(
    ("which digit is this ? Which digit is this? zero one two three four five six seven eight nine",
     "user assistant User Assistant USER ASSISTANT [INST] [/INST] system")
)  # fmt: skip


def trained_bpe(style: str, special_tokens: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a BPE trained on ``VLM_WORDS``: ``"bytes"`` (GPT-2/Qwen2 style) or
    ``"pieces"`` (Llama/Gemma style, with the 256 byte-fallback tokens)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    alphabet: list[str] = []
    if style == "bytes":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    size = len(special_tokens) + len(alphabet) + 160
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=special_tokens, initial_alphabet=alphabet, show_progress=False
    )
    tokenizer.train_from_iterator([VLM_WORDS] * 3 + VLM_WORDS.split(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    if style == "pieces":
        for byte in range(256):
            vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    return vocab, [(a, b) for a, b in model["merges"]]


def _tiny_text(tokenizer: T.PreTrainedTokenizerBase, **extra: object) -> dict[str, object]:
    return {
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id, **extra,
    }  # fmt: skip


_TINY_CLIP = {"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
              "image_size": 28, "patch_size": 7}  # fmt: skip

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %} {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
LLAVA_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}[INST] {% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
    "{% else %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
)
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% else %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _llama_style_tokenizer(template: str) -> T.PreTrainedTokenizerBase:
    vocab, merges = trained_bpe("pieces", ["<unk>", "<s>", "</s>", "<image>"])
    tokenizer = T.LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<unk>",
                                 extra_special_tokens={"image_token": "<image>"})  # fmt: skip
    tokenizer.chat_template = template
    return tokenizer


def _llava_config(
    cls: type[T.PretrainedConfig], tokenizer: T.PreTrainedTokenizerBase, **extra: object
) -> object:
    return cls(
        vision_config=T.CLIPVisionConfig(**_TINY_CLIP), text_config=T.LlamaConfig(**_tiny_text(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1, **extra,
    )  # fmt: skip


def save_llava(path: Path) -> Path:
    """LLaVA-1.5's layout: CLIP (CLS dropped, 16 image tokens), a 2-layer MLP projector, Llama."""
    tokenizer = _llama_style_tokenizer(LLAVA_TEMPLATE)
    image_processor = T.CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    processor = T.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=7,
                                 vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                 chat_template=LLAVA_TEMPLATE)  # fmt: skip
    T.LlavaForConditionalGeneration(_llava_config(T.LlavaConfig, tokenizer)).save_pretrained(path)
    processor.save_pretrained(path)
    return path


LLAVA_NEXT_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def save_llava_next(path: Path) -> Path:
    """LLaVA-NeXT (anyres): a base view plus tiles per image, padded to the batch's most tiles."""
    tokenizer = _llama_style_tokenizer(LLAVA_NEXT_TEMPLATE)
    image_processor = T.LlavaNextImageProcessorPil(
        size={"shortest_edge": 28},
        crop_size={"height": 28, "width": 28},
        image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
    )
    processor = T.LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=7,
                                     vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                     chat_template=LLAVA_NEXT_TEMPLATE)  # fmt: skip
    config = _llava_config(T.LlavaNextConfig, tokenizer, image_grid_pinpoints=LLAVA_NEXT_PINPOINTS)
    T.LlavaNextForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _idefics3_parts() -> tuple[T.PreTrainedTokenizerBase, dict[str, object], dict[str, object]]:
    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    special = ["<|endoftext|>", "<|begin_of_text|>", "<fake_token_around_image>", "<image>",
               "<end_of_utterance>", "<global-img>", *grid]  # fmt: skip
    vocab, merges = trained_bpe("bytes", special)
    tokenizer = T.GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="<|begin_of_text|>",
                                eos_token="<end_of_utterance>", pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": special[2:]})
    return tokenizer, dict(_TINY_CLIP), _tiny_text(tokenizer, max_position_embeddings=512)


def save_idefics3(path: Path) -> Path:
    """Idefics3: an image split into 28 px crops plus a global view (4 tokens each after the pixel
    shuffle), padded to the batch's most crops with a ``pixel_attention_mask``."""
    tokenizer, vision, text = _idefics3_parts()
    image_processor = T.Idefics3ImageProcessorPil(
        size={"longest_edge": 56}, max_image_size={"longest_edge": 28}
    )
    processor = T.Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                    chat_template=IDEFICS3_TEMPLATE)  # fmt: skip
    config = T.Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                              image_token_id=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    T.Idefics3ForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def save_smolvlm(path: Path) -> Path:
    """SmolVLM as a snapshot holds it: its processor class cannot be built here (its video processor
    needs torchvision), so the files are written piece by piece; ranktune loads it without video."""
    import json

    tokenizer, vision, text = _idefics3_parts()
    config = T.SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2,
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    T.SmolVLMForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor = T.SmolVLMImageProcessorPil(
        size={"longest_edge": 56}, max_image_size={"longest_edge": 28}
    )
    image_processor.save_pretrained(path)
    processor = {"processor_class": "SmolVLMProcessor", "image_seq_len": 4}
    (path / "processor_config.json").write_text(json.dumps(processor))
    return path


def save_qwen2_vl(path: Path, version: str = "2") -> Path:
    """Qwen2-VL (``version="2"``) or Qwen2.5-VL (``"2.5"``): 7 px patches merged 2×2, so a 28 px image
    is 16 rows of flat ``pixel_values`` and 4 image tokens. Written piece by piece as a snapshot
    holds it: the processor class itself cannot be built without torchvision (its video processor)."""
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
               "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    vocab, merges = trained_bpe("bytes", special)
    tokenizer = T.Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": special[1:]})
    tokenizer.chat_template = QWEN2_VL_TEMPLATE
    tokens = {f"{name}_token_id": tokenizer.convert_tokens_to_ids(f"<|{pad}|>") for name, pad in
              [("image", "image_pad"), ("video", "video_pad"), ("vision_start", "vision_start"),
               ("vision_end", "vision_end")]}  # fmt: skip
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}
    text = _tiny_text(tokenizer, rope_parameters=rope)
    patches = {"patch_size": 7, "spatial_merge_size": 2, "temporal_patch_size": 2}
    model: T.PreTrainedModel
    if version == "2.5":
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 48,
            "num_heads": 4,
            "out_hidden_size": 32,
            "window_size": 28,
            "fullatt_block_indexes": [1],
            **patches,
        }
        config = T.Qwen2_5_VLConfig(vision_config=vision, text_config=text, **tokens)
        model = T.Qwen2_5_VLForConditionalGeneration(config)
    else:
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2, **patches}
        model = T.Qwen2VLForConditionalGeneration(
            T.Qwen2VLConfig(vision_config=vision, text_config=text, **tokens)
        )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor = T.Qwen2VLImageProcessorPil(
        size={"shortest_edge": 14 * 14, "longest_edge": 56 * 56},
        patch_size=7,
        merge_size=2,
        temporal_patch_size=2,
    )
    image_processor.save_pretrained(path)
    (path / "chat_template.jinja").write_text(QWEN2_VL_TEMPLATE)
    return path


def save_paligemma(path: Path) -> Path:
    """PaliGemma: SigLIP (16 image tokens), a linear projector, Gemma with a bidirectional prefix."""
    vocab, merges = trained_bpe("pieces", ["<pad>", "<eos>", "<bos>", "<unk>"])
    tokenizer = T.GemmaTokenizer(vocab=vocab, merges=merges)
    image_processor = T.SiglipImageProcessorPil(size={"height": 28, "width": 28}, image_seq_length=16)
    processor = T.PaliGemmaProcessor(
        image_processor=image_processor, tokenizer=tokenizer
    )  # adds <image>, <loc…>
    config = T.PaliGemmaConfig(
        vision_config=_TINY_CLIP, text_config=_tiny_text(tokenizer, head_dim=8), vocab_size=len(tokenizer),
        image_token_index=processor.image_token_id, projection_dim=32, hidden_size=32,
    )  # fmt: skip
    T.PaliGemmaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


VLM_DIRS: dict[str, Callable[[Path], Path]] = {
    "llava": save_llava,
    "llava_next": save_llava_next,
    "idefics3": save_idefics3,
    "smolvlm": save_smolvlm,
    "qwen2_vl": save_qwen2_vl,
    "qwen2_5_vl": lambda path: save_qwen2_vl(path, "2.5"),
    "paligemma": save_paligemma,
}


WIDE_IMAGES = {1, 3}  # of every 4 examples of write_vqa_data, those whose image is 56 px wide


def write_vqa_data(root: Path, examples: int = 12) -> Path:
    """A JSONL data set (``train.jsonl``: all but the last 4, ``val.jsonl``: the last 4) of real MNIST
    digits asking "Which digit is this?"; images 28 x 28 px, or 28 x 56 for ``WIDE_IMAGES``."""
    import json

    import numpy as np
    from PIL import Image

    from ranktune.trainer.builtin.mnist import load_digits
    from ranktune.trainer.builtin.tiny_vlm import DIGIT_WORDS

    digits = load_digits("test")
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(examples):
        pixels = (digits.images[i, 0] * 255).round().astype(np.uint8)
        if i % 4 in WIDE_IMAGES:
            pixels = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
        Image.fromarray(pixels).save(root / "img" / f"{i}.png")
        answer = DIGIT_WORDS[digits.labels[i]]
        rows.append({"image": f"img/{i}.png", "question": "Which digit is this?", "answer": answer})
    for name, chosen in (("train.jsonl", rows[:-4]), ("val.jsonl", rows[-4:])):
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return root
