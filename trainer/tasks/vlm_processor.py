"""A vision-language model's processor: loading it offline, and cutting its output per example.

Loading. ``AutoProcessor`` first. Processors that also handle video (Qwen2-VL, Qwen2.5-VL,
SmolVLM) load a video processor that needs torchvision even when no video is ever passed. ranktune
does not depend on torchvision (a torchvision wheel must match the installed torch build exactly,
and the ones at hand may be CUDA builds beside a CPU torch), so when only that fails the processor
is rebuilt from its image processor and tokenizer alone. Videos are therefore not supported: a
JSONL record carries one image. Any other failure is a ``TaskError`` on ``model``, in one line.

Cutting. A processor called on a batch returns some tensors with one row per example
(``input_ids``, LLaVA's ``pixel_values``, LLaVA-NeXT's tiles and ``image_sizes``, Idefics3's
padded sub-images and ``pixel_attention_mask``) and some with rows per image patch (Qwen2-VL's
flat ``pixel_values``, whose rows per image are the product of that image's ``image_grid_thw``).
``select_examples`` takes examples out of such a batch by what each row belongs to, never by
assuming one row per example.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ranktune.trainer.errors import TaskError

if TYPE_CHECKING:
    from ranktune.trainer.tasks.base import Batch

# Tensors whose rows are image patches, with the tensor that says how many rows each image has.
PATCH_ROWS = {"pixel_values": "image_grid_thw", "pixel_values_videos": "video_grid_thw"}


def one_line(error: BaseException) -> str:
    """An exception as one short line (transformers' import errors span several)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def load_processor(model_dir: Path, model: str) -> Any:
    """The processor saved in ``model_dir``, offline; a ``TaskError`` on ``model`` when none works."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    except ImportError as e:
        if "torchvision" not in str(e).lower():
            raise _unusable(model, e) from e
        try:
            processor = _image_only_processor(model_dir)
        except Exception as again:  # any failure here means the user's model is unusable
            raise _unusable(model, again) from again
        if processor is None:
            raise _unusable(model, e) from e
        return processor
    except Exception as e:  # a processor is the model's own code: its failures are the model's
        raise _unusable(model, e) from e


def _unusable(model: str, error: BaseException) -> TaskError:
    return TaskError(
        f"model: {model} has no usable processor for images and text ({one_line(error)})", field="model"
    )


def _image_only_processor(model_dir: Path) -> Any:
    """The model's processor class without its video processor; None when the class has none."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    cls: Any = PROCESSOR_MAPPING.get(type(config), None)
    if cls is None or "video_processor" not in cls.get_attributes():
        return None
    processor = image_only(cls).from_pretrained(model_dir, local_files_only=True)
    # transformers hands processor_config.json's entries only to parameters its __init__'s code names,
    # which the subclass's does not: set the class's own (SmolVLM's image_seq_len) as it would have.
    saved = model_dir / "processor_config.json"
    options = json.loads(saved.read_text()) if saved.is_file() else {}
    own = inspect.signature(cls.__init__).parameters
    for name, value in options.items():
        if name in own and name not in cls.get_attributes() and hasattr(processor, name):
            setattr(processor, name, value)
    return processor


def image_only(cls: Any) -> Any:
    """A subclass of processor class ``cls`` whose sub-processors are its image processor and tokenizer.

    transformers reads a processor's sub-processors from its ``__init__`` signature, so a signature
    without ``video_processor`` is what keeps it from loading (and requiring) one.
    """
    parent_init = cls.__init__

    def __init__(self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None,
                 **kwargs: Any) -> None:  # fmt: skip
        kwargs.pop("video_processor", None)
        parent_init(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                    chat_template=chat_template, **kwargs)  # fmt: skip

    return type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})


def takes_suffix(processor: Any) -> bool:
    """Whether the processor takes the target text as ``suffix`` (PaliGemma): it then marks the answer
    with ``token_type_ids`` 1, which the model needs to attend causally over it (the prefix before
    it attends both ways)."""
    return "suffix" in inspect.signature(type(processor).__call__).parameters


def select_examples(encoded: Any, start: int, stop: int, count: int, model: str) -> Batch:
    """Examples ``start:stop`` of a processor's output for ``count`` examples of one image each."""
    import torch

    tensors = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
    batch: Batch = {}
    for key, value in tensors.items():
        grid = tensors.get(PATCH_ROWS.get(key, ""))
        if grid is not None:
            if len(grid) != count:
                raise _layout_error(model, PATCH_ROWS[key], grid, count)
            offsets = [0, *torch.cumsum(grid.prod(dim=-1), dim=0).tolist()]
            if offsets[-1] != len(value):
                raise _layout_error(model, key, value, count)
            batch[key] = value[offsets[start] : offsets[stop]]
        elif len(value) == count:
            batch[key] = value[start:stop]
        else:
            raise _layout_error(model, key, value, count)
    return batch


def _layout_error(model: str, key: str, value: Any, count: int) -> TaskError:
    return TaskError(
        f"model: the processor of {model} returns {key} with {len(value)} rows for {count} examples of "
        "one image each, a layout ranktune cannot split per example",
        field="model",
    )
