"""Vision transformer directories as users have them (config, random weights, the family's real image
processor, PIL backend) at a tiny size, and JSONL image-classification data sets, built offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import transformers as T

SIZE, PATCH = 16, 8  # 4 patches: the smallest image every family accepts at this patch size
SQUARE, SHORT = {"height": SIZE, "width": SIZE}, {"shortest_edge": SIZE}
LABELS = ("cat", "dog", "fox")
_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


def _save(path: Path, model: T.PreTrainedModel, processor: object) -> Path:
    model.save_pretrained(path)
    processor.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def save_vit_classifier(path: Path, num_labels: int = len(LABELS)) -> Path:
    """A ``ViTForImageClassification`` with its own head (``num_labels`` outputs)."""
    config = T.ViTConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         image_size=SIZE, patch_size=PATCH, num_labels=num_labels)  # fmt: skip
    return _save(path, T.ViTForImageClassification(config), T.ViTImageProcessorPil(size=SQUARE))


def save_clip_vision(path: Path) -> Path:
    """A bare ``CLIPVisionModel`` (a VLM's tower saved on its own)."""
    config = T.CLIPVisionConfig(hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                                num_attention_heads=4, image_size=SIZE, patch_size=PATCH)  # fmt: skip
    return _save(path, T.CLIPVisionModel(config), T.CLIPImageProcessorPil(size=SHORT, crop_size=SQUARE))


def save_dinov2(path: Path) -> Path:
    """A bare ``Dinov2Model`` with DINOv2's image processor (``BitImageProcessor``)."""
    config = T.Dinov2Config(hidden_size=32, mlp_ratio=2, num_hidden_layers=2, num_attention_heads=4,
                            image_size=SIZE, patch_size=PATCH)  # fmt: skip
    return _save(path, T.Dinov2Model(config), T.BitImageProcessorPil(size=SHORT, crop_size=SQUARE))


VISION_MODELS: dict[str, Callable[[Path], Path]] = {
    "vit": save_vit_classifier,
    "clip": save_clip_vision,
    "dinov2": save_dinov2,
}


def write_image_data(root: Path, per_label: int = 4, labels: tuple[str, ...] = LABELS) -> Path:
    """``train.jsonl`` (``per_label`` images a label) and ``val.jsonl`` (one a label) of 12 × 12 px PNGs
    whose colour tells the label, with some noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict[str, str]]] = {"train": [], "val": []}
    for i in range(per_label + 1):
        for label in labels:
            pixels = np.clip(np.array(_COLOURS[label]) + rng.integers(-30, 30, (12, 12, 3)), 0, 255)
            name = f"img/{label}-{i}.png"
            Image.fromarray(pixels.astype(np.uint8), "RGB").save(root / name)
            rows["train" if i < per_label else "val"].append({"image": name, "label": label})
    for split, chosen in rows.items():
        (root / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in chosen))
    return root
