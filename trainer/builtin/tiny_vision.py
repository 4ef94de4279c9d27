"""``builtin:tiny-vlm-vision``: the pretrained CLIP vision tower of ``builtin:tiny-vlm``, on its own.

A stock ``CLIPVisionModel`` (4 layers, width 96, 28×28 grayscale images in 16 patches of 7×7; 306k
parameters) holding the tower's weights exactly as the tiny VLM was pretrained (on captioned MNIST
digits, see ``trainer.builtin.pretrain``). It is what image classification fine-tunes in DMLoRA's
setting: a pretrained vision transformer and a new head (``builtin:fashion-cls``, or a user's JSONL).

It is a model directory like any other (``config.json``, ``model.safetensors`` and the image
processor's ``preprocessor_config.json``), cut out of the tiny VLM's cache the first time it is
needed and kept beside it, under a name that carries the VLM's weights' sha256 (a re-pretrained VLM
gets a new tower). Its image processor reproduces the VLM's own pixels: grayscale 28×28, values in
[0, 1], no normalisation. Planning needs neither: ``tiny_vision_config`` is built in memory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ranktune.trainer.builtin.tiny_vlm import IMAGE_SIZE
from ranktune.trainer.cache import cache_dir

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig

NAME = "builtin:tiny-vlm-vision"
MARKER_FILE = "ranktune.json"


def tiny_vision_config() -> CLIPVisionConfig:
    """The tower's config (that of ``tiny_vlm_config().vision_config``), naming its class."""
    from ranktune.trainer.builtin.tiny_vlm import tiny_vlm_config

    config: Any = tiny_vlm_config().vision_config
    config.architectures = ["CLIPVisionModel"]
    return config  # type: ignore[no-any-return]


def tiny_vision_processor() -> Any:
    """CLIP's image processor (the PIL one) set to the tiny VLM's pixels: gray 28×28 in [0, 1]."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_normalize=False,
        do_convert_rgb=False,
    )


def tiny_vision_dir() -> Path:
    """The tower's model directory, cut out of the pretrained tiny VLM once (pretraining it if needed)."""
    from ranktune.trainer.builtin.pretrain import MARKER_FILE as VLM_MARKER
    from ranktune.trainer.builtin.pretrain import cache_path, load_tiny_vlm

    marker = cache_path() / VLM_MARKER
    if not marker.is_file():
        load_tiny_vlm()  # pretrains and caches the tiny VLM, marker included
    weights = str(json.loads(marker.read_text())["weights_sha256"])
    final = cache_dir() / f"tiny-vlm-vision-{weights[:16]}"
    if not (final / MARKER_FILE).is_file():
        _build(final, weights)
    return final


def _build(final: Path, weights: str) -> None:
    """Save the tower and its processor into a temporary sibling, then rename it into place."""
    from transformers import CLIPVisionModel

    from ranktune.trainer.builtin.pretrain import load_tiny_vlm, quiet_transformers

    vlm: Any = load_tiny_vlm()
    tower = CLIPVisionModel(tiny_vision_config())
    tower.load_state_dict(vlm.model.vision_tower.state_dict())
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)
        with quiet_transformers():
            tower.save_pretrained(tmp)
        tiny_vision_processor().save_pretrained(tmp)
        marker = {"model": NAME, "tiny_vlm_weights_sha256": weights}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        if final.exists() and not (final / MARKER_FILE).is_file():
            shutil.rmtree(final, ignore_errors=True)  # debris of a killed build
        os.rename(tmp, final)
    except OSError:
        if not (final / MARKER_FILE).is_file():
            raise  # not a lost race with another process: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
