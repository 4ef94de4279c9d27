"""Tiny configs of every architecture the site rules must get right, built offline in milliseconds."""

from __future__ import annotations

from collections.abc import Callable

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


TINY_MODELS: dict[str, Callable[[], T.PreTrainedModel]] = {
    "llava": tiny_llava,
    "idefics3": tiny_idefics3,
    "qwen2_vl": tiny_qwen2_vl,
    "llama": tiny_llama,
    "bert": tiny_bert,
    "vit": tiny_vit,
}
