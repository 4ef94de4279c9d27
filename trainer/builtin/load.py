"""The pretrained weights of a built-in model spec (``builtin:tiny-vlm``, its tower, ``builtin:minilm``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def load_builtin_model(spec: str, device: str = "cpu") -> nn.Module:
    """The pretrained weights of a built-in model spec, in fp32 (the tiny VLM is pretrained once, cached)."""
    from ranktune.search.errors import SiteError
    from ranktune.trainer.models import BUILTIN_MODELS

    if spec == "builtin:tiny-vlm":
        from ranktune.trainer.builtin.pretrain import load_tiny_vlm

        return load_tiny_vlm(device)
    if spec == "builtin:tiny-vlm-vision":
        from ranktune.trainer.builtin.tiny_vision import tiny_vision_dir
        from ranktune.trainer.models import load_pretrained

        return load_pretrained(tiny_vision_dir()).to(device)
    if spec == "builtin:minilm":
        from ranktune.trainer.models import minilm_dir
        from ranktune.trainer.tasks.classification import load_encoder

        return load_encoder(minilm_dir()).to(device)
    raise SiteError(f"model: {spec!r} is not a built-in model ({', '.join(BUILTIN_MODELS)})")
