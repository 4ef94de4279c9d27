"""``builtin:fashion-cls``: Fashion-MNIST's ten classes on the tiny VLM's pretrained vision tower.

DMLoRA's own setting, transfer learning of a pretrained vision transformer to a new image
classification task: ``builtin:tiny-vlm-vision`` (the CLIP tower of ``builtin:tiny-vlm``, pretrained
on handwritten digits only) gets a new linear head over its mean-pooled last hidden states and
learns to tell real photographs of clothing, shoes and bags apart (``trainer.tasks.image_classification``).
The head (970 parameters) trains in full for every schedule, apart from the adapter budget; the
adapter sites are the tower's 24 linear layers.

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (MIT licence; ``trainer.builtin.fashion_mnist``),
the same images as ``builtin:fashion-vqa``: train 12,000 and val 2,000 images of the training file,
test all 10,000 images of the test file (a large test split: a run's binomial standard error is
about 0.4 points at 85% accuracy). Any other vision transformer directory may stand in for the tower:
the grayscale images then go through its own image processor, converted to its channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ranktune.trainer.builtin.fashion_mnist import CLASSES, load_fashion, load_fashion_test_file
from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import SPLITS, Split, Task, sha256_of
from ranktune.trainer.tasks.image_classification import (
    TINY_VISION,
    VISION_MODELS,
    ImageClassificationTask,
    is_vision_spec,
)

if TYPE_CHECKING:
    from PIL import Image

    from ranktune.trainer.builtin.mnist import DigitImages

NAME = "builtin:fashion-cls"


class FashionClsTask(ImageClassificationTask):
    """Classify Fashion-MNIST images into its ten classes; accuracy."""

    name: ClassVar[str] = NAME
    description: ClassVar[str] = (
        "REAL Fashion-MNIST images of clothing in its 10 classes, classified by builtin:tiny-vlm-vision "
        "(the pretrained CLIP vision tower of builtin:tiny-vlm, which saw digits only) with a new linear "
        "head; DMLoRA's transfer setting; test split 10,000, val 2,000; metric: accuracy."
    )

    def __init__(self, model_dir: str | Path | None = None, model: str | None = None) -> None:
        """``model_dir``: another vision transformer directory to fine-tune instead of the tower."""
        super().__init__(Path(model_dir) if model_dir is not None else None, CLASSES, model)
        self._pools: dict[Split, DigitImages] = {}

    def pool(self, split: Split) -> DigitImages:
        if split not in self._pools:
            self._pools[split] = load_fashion_test_file() if split == "test" else load_fashion(split)
        return self._pools[split]

    def labels(self, split: Split) -> list[int]:
        return [int(label) for label in self.pool(split).labels]

    def open_images(self, split: Split, rows: Sequence[int]) -> list[Image.Image]:
        from PIL import Image

        images = self.pool(split).images
        return [Image.fromarray(np.round(images[row, 0] * 255).astype(np.uint8), "L").convert(self.image_mode)
                for row in rows]  # fmt: skip

    def data_sha256(self) -> str:
        parts: list[object] = []
        for split in SPLITS:
            parts += [self.pool(split).images, self.pool(split).labels]
        return sha256_of(self.label_names, *parts)


def fashion_cls_task(model: str, model_dir: Path | None) -> Task:
    """``builtin:fashion-cls`` on ``model``: the built-in tower, or a vision transformer directory
    (``model_dir``, resolved by the registry)."""
    if model == TINY_VISION:
        return FashionClsTask()
    if model_dir is None or not is_vision_spec(model, model_dir):
        raise TaskError(f"model: {NAME} fine-tunes {VISION_MODELS}, not {model!r}; use --model "
                        f"{TINY_VISION} (the pretrained vision tower of builtin:tiny-vlm)",
                        field="model")  # fmt: skip
    return FashionClsTask(model_dir, model)
