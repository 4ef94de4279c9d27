"""Image classification with a pretrained vision transformer: DMLoRA's own setting.

The model is loaded in the class its directory names (``trainer.models.model_class``), the class
planning builds, so a plan's module names are the ones trained and exported:

- a ``…ForImageClassification`` (ViT, DeiT, CLIP, SigLIP, DINOv2, …) keeps its own head (its
  top-level modules that hold no adapter site, e.g. ``classifier``), re-sized to the labels when
  their number differs (``classification.fit_own_head``); its labels keep the checkpoint's order
  when they are exactly its own;
- a bare vision model (``ViTModel``, ``Dinov2Model``, ``CLIPVisionModel``, ``SiglipVisionModel``,
  ``builtin:tiny-vlm-vision``) gets a new linear head, the submodule ``classifier``, over the mean of
  its last hidden states over every token (CLS, patches, registers), initialised from ``HEAD_SEED``.

Either head trains in full, apart from the adapter budget, and is written with the adapter as PEFT's
``modules_to_save``: ``PeftModel.from_pretrained`` into the directory's class (for a bare model, with
``with_new_head`` attaching the ``classifier`` first) reproduces the trained logits.

Images go through the model's own image processor (``AutoImageProcessor``, PIL backend: ranktune
does not depend on torchvision), opened as ``L`` for a one-channel model and ``RGB`` otherwise. A
split whose pixels fit in ``PIXEL_CACHE_BYTES`` is encoded once; a larger one batch by batch.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import (
    SPLITS,
    Batch,
    Split,
    Task,
    model_device,
    sha256_of,
    tensor_batches,
)
from ranktune.trainer.tasks.classification import (
    HEAD_NAME,
    LabelledTask,
    attach_classifier,
    find_head,
    fit_own_head,
)
from ranktune.trainer.tasks.jsonl_records import Record
from ranktune.trainer.tasks.vlm_processor import one_line

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn
    from transformers import PretrainedConfig

TINY_VISION = "builtin:tiny-vlm-vision"
RECORDS = {"vqa": "VQA (image, question, answer)", "classification": "text classification (text, label)",
           "completion": "instruction (prompt, completion)", "chat": "instruction (messages)"}  # fmt: skip
PIXEL_CACHE_BYTES = 256 * 2**20
ENCODE_CHUNK = 1024  # images opened and encoded at once while a split is cached
VISION_MODELS = (
    "a vision transformer (builtin:tiny-vlm-vision, or a ViT, DeiT, CLIP or SigLIP vision, DINOv2 directory)"
)


def classifier_heads(config: PretrainedConfig) -> tuple[str, ...]:
    """An image classifier's head: its top-level modules with parameters but no adapter site (on meta)."""
    from ranktune.trainer.models import build_on_meta
    from ranktune.trainer.sites import sites_of_model

    model = build_on_meta(config)
    sites = [site.name for site in sites_of_model(model)]
    return tuple(
        name
        for name, child in model.named_children()
        if any(True for _ in child.parameters()) and not any(s.startswith(f"{name}.") for s in sites)
    )


def with_new_head(model: nn.Module, num_labels: int) -> nn.Module:
    """A bare vision model with the ``classifier`` the task gives it (to load an adapter into)."""
    return attach_classifier(model, num_labels)


def mean_pooled_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """A bare vision model's logits: its ``classifier`` over the mean of the last hidden states."""
    hidden = model(pixel_values=pixel_values).last_hidden_state
    return find_head(model)(hidden.mean(dim=1))  # type: ignore[no-any-return]


class ImageClassificationTask(LabelledTask):
    """A vision model and a head; subclasses supply each split's labels and images."""

    metric: ClassVar[str] = "accuracy"

    def __init__(self, model_dir: Path | None, label_names: Sequence[str], model: str | None = None) -> None:
        """``model_dir`` None: the built-in ``builtin:tiny-vlm-vision`` (made when its weights are needed)."""
        from ranktune.trainer.models import is_image_classifier, load_config

        self.model_dir = model_dir
        self.model = model or (str(model_dir) if model_dir is not None else TINY_VISION)
        self.label_names = tuple(label_names)
        self.config: Any = load_config(str(model_dir) if model_dir is not None else TINY_VISION)
        self.own_head = is_image_classifier(self.config)
        heads = classifier_heads(self.config) if self.own_head else (HEAD_NAME,)
        self.head_modules = self.saved_heads = heads
        self.image_mode = "L" if getattr(self.config, "num_channels", 3) == 1 else "RGB"
        self._processor: Any = None
        self._pixels: dict[Split, torch.Tensor] = {}
        self._uncached: set[Split] = set()

    @abstractmethod
    def labels(self, split: Split) -> list[int]:
        """Label ids of ``split``, in its fixed order."""

    @abstractmethod
    def open_images(self, split: Split, rows: Sequence[int]) -> list[Image.Image]:
        """The images of ``rows`` of ``split``, in ``image_mode``."""

    def split_size(self, split: Split) -> int:
        return len(self.labels(split))

    def processor(self) -> Any:
        from transformers import AutoImageProcessor

        if self._processor is None:
            if self.model_dir is None:
                from ranktune.trainer.builtin.tiny_vision import tiny_vision_processor

                self._processor = tiny_vision_processor()
            elif not (self.model_dir / "preprocessor_config.json").is_file():
                raise TaskError(f"model: {self.model} has no saved image processor "
                                "(preprocessor_config.json); save it with image_processor.save_pretrained",
                                field="model")  # fmt: skip
            else:
                try:
                    self._processor = AutoImageProcessor.from_pretrained(
                        self.model_dir, local_files_only=True, backend="pil"
                    )
                except Exception as e:  # the processor is the model's own code: its failures are the model's
                    raise TaskError(f"model: {self.model} has no usable image processor ({one_line(e)})",
                                    field="model") from e  # fmt: skip
        return self._processor

    def encode(self, images: list[Image.Image]) -> torch.Tensor:
        """``pixel_values`` of ``images`` as the model's processor makes them, float32."""
        import torch

        try:
            pixels = self.processor()(images=images, return_tensors="pt")["pixel_values"]
        except TaskError:
            raise
        except Exception as e:
            raise TaskError(f"model: the image processor of {self.model} cannot encode the images "
                            f"({one_line(e)})", field="model") from e  # fmt: skip
        if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or len(pixels) != len(images):
            raise TaskError(f"model: the image processor of {self.model} does not make one image tensor "
                            "(channels, height, width) per image", field="model")  # fmt: skip
        return pixels.float()

    def pixels(self, split: Split, rows: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` of ``rows``: from the split's cache when its pixels fit, else encoded now."""
        import torch

        if split not in self._pixels and split not in self._uncached:
            size = self.split_size(split)
            first = self.encode(self.open_images(split, [0]))
            if size * first.numel() * first.element_size() > PIXEL_CACHE_BYTES:
                self._uncached.add(split)
            else:
                chunks = [self.encode(self.open_images(split, range(start, min(size, start + ENCODE_CHUNK))))
                          for start in range(0, size, ENCODE_CHUNK)]  # fmt: skip
                self._pixels[split] = torch.cat(chunks)
        if split in self._pixels:
            return self._pixels[split][rows]
        return self.encode(self.open_images(split, rows.tolist()))

    def build_model(self) -> nn.Module:
        from ranktune.trainer.models import load_pretrained

        if self.model_dir is None:
            from ranktune.trainer.builtin.tiny_vision import tiny_vision_dir

            model = load_pretrained(tiny_vision_dir())
        else:
            model = load_pretrained(self.model_dir)
        if self.own_head:
            return fit_own_head(model, self.head_modules, self.label_names)
        if not isinstance(getattr(model.config, "hidden_size", None), int):
            raise TaskError(f"model: {self.model} ({type(model).__name__}) has no hidden_size for a new head",
                            field="model")  # fmt: skip
        return with_new_head(model, len(self.label_names))

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        pixel_values = batch["pixel_values"].to(model_device(model))
        if self.own_head:
            return model(pixel_values=pixel_values).logits  # type: ignore[no-any-return]
        return mean_pooled_logits(model, pixel_values)

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        import torch

        rows = {"row": torch.arange(self.split_size(split)), "labels": torch.tensor(self.labels(split))}
        for chosen in tensor_batches(rows, split, batch_size, seed):
            yield {"pixel_values": self.pixels(split, chosen["row"]), "labels": chosen["labels"]}


def open_record_image(record: Record, mode: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    path = record.image_path()
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, UnidentifiedImageError) as e:
        raise TaskError(f"task: {record.where}: key 'image': cannot open {path} ({one_line(e)})") from e


class JsonlImageClassificationTask(ImageClassificationTask):
    """Image classification from JSONL (``{"image": "img/0.png", "label": "cat"}``, see
    ``trainer.tasks.jsonl``); every image is checked to open before anything trains."""

    name: ClassVar[str] = "jsonl:image-classification"
    description: ClassVar[str] = "Image classification from a user's JSONL files; metric: accuracy."

    def __init__(
        self, model: str, model_dir: Path | None, splits: dict[Split, list[Record]], source: Path
    ) -> None:
        from PIL import Image, UnidentifiedImageError

        from ranktune.trainer.tasks.classification import label_order

        names = sorted({r.data["label"] for records in splits.values() for r in records})
        if len(names) < 2:
            first = splits["train"][0]
            raise TaskError(f"task: {first.where}: key 'label': every record of {source} has the label "
                            f"{names[0]!r}; classification needs at least two labels")  # fmt: skip
        super().__init__(model_dir, label_order(model_dir, names) if model_dir else names, model)
        self.source, self.splits = source, splits
        index = {label: i for i, label in enumerate(self.label_names)}
        self._labels = {split: [index[r.data["label"]] for r in records] for split, records in splits.items()}
        for records in splits.values():
            for record in records:
                try:
                    Image.open(record.image_path()).close()  # reads the header only
                except (OSError, UnidentifiedImageError) as e:
                    raise TaskError(f"task: {record.where}: key 'image': cannot open "
                                    f"{record.image_path()} ({one_line(e)})") from e  # fmt: skip
        self.encode(self.open_images("train", [0]))  # a processor that cannot encode them fails now

    def labels(self, split: Split) -> list[int]:
        return self._labels[split]

    def open_images(self, split: Split, rows: Sequence[int]) -> list[Image.Image]:
        return [open_record_image(self.splits[split][row], self.image_mode) for row in rows]

    def data_sha256(self) -> str:
        import hashlib

        parts = [[(str(r.image_path()), hashlib.sha256(r.image_path().read_bytes()).hexdigest(),
                   r.data["label"]) for r in self.splits[s]] for s in SPLITS]  # fmt: skip
        return sha256_of(self.label_names, *parts)


def is_vision_spec(model: str, model_dir: Path | None) -> bool:
    """Whether ``model`` (resolved to ``model_dir``; None for a built-in) is a vision transformer: an image
    classifier, or a bare one whose tokens have a width (``hidden_size``) a new head can read."""
    from ranktune.trainer.models import is_image_classifier, is_vision_model, load_config

    if model == TINY_VISION:
        return True
    if model_dir is None:
        return False
    config = load_config(str(model_dir))
    width = getattr(config, "hidden_size", None)
    return is_vision_model(config) and (is_image_classifier(config) or isinstance(width, int))


def image_classification_task(
    model: str, model_dir: Path | None, splits: dict[Split, list[Record]], source: Path, kind: str
) -> Task | None:
    """The task for image-classification records on a vision model; None when neither the data nor the
    model is for image classification; a ``TaskError`` on ``model`` when only one of them is."""
    vision = is_vision_spec(model, model_dir)
    if kind == "image_classification" and vision:
        return JsonlImageClassificationTask(model, model_dir, splits, source)
    if vision:
        raise TaskError(f"model: {model} is a vision transformer, but {source} holds {RECORDS[kind]} "
                        "records; it takes image classification records (image, label)",
                        field="model")  # fmt: skip
    if kind == "image_classification":
        raise TaskError(f"model: {model} is not a vision transformer, but {source} holds image "
                        f"classification records (image, label); use {VISION_MODELS}",
                        field="model")  # fmt: skip
    return None
