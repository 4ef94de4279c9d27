"""``builtin:tiny-vlm``: a real, small vision-language model in the LLaVA layout.

A CLIP vision tower reads 28×28 grayscale digits as 16 patches of 7×7, a two-layer projector maps
them into a Llama language model with a word-level vocabulary of 64 tokens. About 1.2M
parameters, so two CPU cores fine-tune it in seconds per hundred steps. Every piece is a stock
transformers class, so PEFT, ``save_pretrained`` and the site rules treat it like any LLaVA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlavaConfig, PreTrainedTokenizerFast

NAME = "builtin:tiny-vlm"
IMAGE_SIZE = 28
PATCH_SIZE = 7
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # the CLS token is dropped by the "default" strategy

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>", "<image>")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Captions ("a handwritten digit seven") and digit questions ("is this digit greater than four ?").
WORDS = (
    *DIGIT_WORDS,
    "ten", "yes", "no", "odd", "even", "a", "an", "the", "this", "that", "it", "is", "of", "or", "and",
    "which", "what", "digit", "number", "image", "picture", "handwritten", "shows", "written",
    "greater", "less", "than", "comes", "after", "before", "plus", "minus", "equal", "to", "does",
    "show", "?", ".", "question", "answer", "caption", ":", "small", "large",
)  # fmt: skip
VOCABULARY: tuple[str, ...] = (*SPECIAL_TOKENS, *WORDS)
PAD_ID, BOS_ID, EOS_ID, UNK_ID, IMAGE_ID = range(len(SPECIAL_TOKENS))
VOCAB_SIZE = 64
assert len(VOCABULARY) <= VOCAB_SIZE, "the vocabulary outgrew the embedding table"


def tiny_vlm_config() -> LlavaConfig:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=1,
        projection_dim=96,
    )
    text = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        tie_word_embeddings=True,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=IMAGE_ID,
        image_seq_length=IMAGE_TOKENS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        tie_word_embeddings=True,
    )


def tiny_vlm_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``VOCABULARY``; ``<image>`` stands for the 16 image tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(VOCABULARY)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
