"""Pretrained weights for ``builtin:tiny-vlm``, made on this machine the first time they are needed.

Nothing is downloaded: the first call of ``load_tiny_vlm`` pretrains the tiny VLM from a fixed seed
on the ``pretrain`` pool of the bundled MNIST digits (see ``trainer.builtin.mnist``) with an
image-captioning objective::

    <image>×16 <bos> caption : a handwritten digit seven <eos>

(loss on the caption words and ``<eos>`` only), about a minute on two CPU cores, and saves the
result with ``save_pretrained`` (safetensors, plus the tokenizer) under
``cache_dir() / CACHE_VERSION``. Later calls load that directory in a fraction of a second.

The directory appears atomically (written to a temporary sibling, then renamed), so a process
killed mid-way never leaves a half-written cache, and two processes racing to build it both end up
loading the same complete copy. ``CACHE_VERSION`` names the recipe: change the recipe, bump it.

The pretrained model reads digits but has never seen a question: ``builtin:digits-vqa`` starts
near zero and has to be learned by fine-tuning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ranktune.search.errors import SiteError
from ranktune.trainer.builtin.mnist import load_digits
from ranktune.trainer.builtin.tiny_vlm import (
    BOS_ID,
    DIGIT_WORDS,
    EOS_ID,
    IMAGE_ID,
    IMAGE_TOKENS,
    NAME,
    PAD_ID,
    VOCABULARY,
    tiny_vlm_config,
    tiny_vlm_tokenizer,
)
from ranktune.trainer.cache import cache_dir

if TYPE_CHECKING:
    import torch
    from transformers import LlavaForConditionalGeneration

log = logging.getLogger(__name__)

CACHE_VERSION = "tiny-vlm-v1"
MARKER_FILE = "ranktune.json"  # written last into the directory: the recipe and how long it took
CAPTION_PROMPT = ("caption", ":")
CAPTION_TEMPLATES = (
    "a handwritten digit {}",
    "the number {}",
    "an image of the digit {}",
    "this picture shows a {}",
)
_STALE_TEMP_SECONDS = 24 * 3600


@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that determines the pretrained weights (with the MNIST split and the config)."""

    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    max_shift: int = 2  # random translation in pixels, so the model reads digits, not pixels
    seed: int = 0


DEFAULT_RECIPE = PretrainRecipe()


def cache_path(recipe: PretrainRecipe = DEFAULT_RECIPE) -> Path:
    """Where ``recipe``'s weights live; any recipe but the default gets its own hashed directory."""
    if recipe == DEFAULT_RECIPE:
        return cache_dir() / CACHE_VERSION
    digest = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir() / f"{CACHE_VERSION}-{digest}"


def load_tiny_vlm(
    device: str | torch.device = "cpu", *, recipe: PretrainRecipe = DEFAULT_RECIPE
) -> LlavaForConditionalGeneration:
    """The pretrained ``builtin:tiny-vlm`` in fp32 on ``device``, pretraining it once if needed."""
    import torch

    path = cache_path(recipe)
    if not (path / MARKER_FILE).is_file():
        with _build_lock(path):  # processes started together wait for one build instead of racing
            if not (path / MARKER_FILE).is_file():
                build_cache(recipe)
    model = load_saved_tiny_vlm(path)
    torch.nn.Module.to(model, device)  # transformers wraps `to` with a signature mypy misreads
    return model


def load_saved_tiny_vlm(path: Path) -> LlavaForConditionalGeneration:
    """A tiny VLM directory written by ``save_pretrained`` (the cache or a fine-tuned copy), fp32 on CPU."""
    from safetensors import SafetensorError
    from transformers import LlavaForConditionalGeneration

    try:
        with quiet_transformers():
            return LlavaForConditionalGeneration.from_pretrained(path, dtype="float32", local_files_only=True)
    except (OSError, ValueError, SafetensorError) as e:
        raise SiteError(
            f"model: cannot load the tiny VLM in {path} ({e}); a damaged cache directory can be "
            "deleted: it is rebuilt on the next use"
        ) from e


def frozen_tiny_vlm(model_dir: Path | None = None) -> LlavaForConditionalGeneration:
    """What a tiny-VLM task fine-tunes: the built-in weights (None) or a saved copy, every weight frozen."""
    model = load_tiny_vlm() if model_dir is None else load_saved_tiny_vlm(model_dir)
    model.requires_grad_(False)
    return model


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock beside the cache directory (none where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent builds stay correct (atomic rename), only wasteful
        yield
        return
    with open(path.parent / f".{path.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_tiny_vlm_dir(path: Path) -> bool:
    """A directory saved from ``builtin:tiny-vlm`` (ours or a fine-tuned copy): LLaVA, our vocabulary."""
    from tokenizers import Tokenizer

    try:
        config = json.loads((path / "config.json").read_text())
        vocab = Tokenizer.from_file(str(path / "tokenizer.json")).get_vocab(with_added_tokens=True)
    except Exception:  # OSError, bad JSON, and tokenizers raises a bare Exception on a bad file
        return False
    return config.get("model_type") == "llava" and vocab == {w: i for i, w in enumerate(VOCABULARY)}


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars (loading/saving shards) unless stderr is a terminal."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_cache(recipe: PretrainRecipe = DEFAULT_RECIPE) -> Path:
    """Pretrain and save atomically; returns the directory (someone else's copy if they finished first)."""
    final = cache_path(recipe)
    _remove_stale_temporaries(final.parent)
    log.info("pretraining %s once (recipe %s); it is cached in %s", NAME, CACHE_VERSION, final)
    started = time.perf_counter()
    model = pretrain_tiny_vlm(recipe)
    seconds = time.perf_counter() - started
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        with quiet_transformers():
            model.save_pretrained(tmp)
            tiny_vlm_tokenizer().save_pretrained(tmp)
        weights = hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest()
        marker = {
            "model": NAME,
            "version": CACHE_VERSION,
            "recipe": asdict(recipe),
            "seconds": round(seconds, 1),
            "weights_sha256": weights,  # compare across workers: same base weights, comparable trials
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        if final.exists() and not (final / MARKER_FILE).is_file():
            shutil.rmtree(final, ignore_errors=True)  # never made by a rename here: debris, replace it
        os.rename(tmp, final)
    except OSError:
        if not (final / MARKER_FILE).is_file():
            raise
        log.info("another process finished %s first; using its copy", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("pretrained %s in %.0f s", NAME, seconds)
    return final


def _remove_stale_temporaries(parent: Path) -> None:
    """Temporary directories of killed builds: removed once they are a day old (never a live one)."""
    now = time.time()
    for entry in parent.glob(f".{CACHE_VERSION}*.tmp-*"):
        try:
            if now - entry.stat().st_mtime > _STALE_TEMP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def caption_ids(digit: int, template: int) -> list[int]:
    words = CAPTION_TEMPLATES[template].format(DIGIT_WORDS[digit]).split()
    return [VOCABULARY.index(w) for w in words]


def caption_batch(
    images: torch.Tensor, digits: torch.Tensor, templates: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Image tokens, ``<bos> caption :``, the caption and ``<eos>``; loss on the caption and ``<eos>``."""
    import torch

    prefix = [IMAGE_ID] * IMAGE_TOKENS + [BOS_ID] + [VOCABULARY.index(w) for w in CAPTION_PROMPT]
    rows = [[*caption_ids(int(d), int(t)), EOS_ID] for d, t in zip(digits, templates, strict=True)]
    length = len(prefix) + max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(prefix) + len(row)] = torch.tensor(prefix + row)
        labels[i, len(prefix) : len(prefix) + len(row)] = torch.tensor(row)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD_ID).long(),
        "pixel_values": images,
        "labels": labels,
    }


def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels in x and y, filling with black."""
    import torch
    import torch.nn.functional as F

    if max_shift == 0:
        return images
    size = images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    return torch.stack(
        [padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets.tolist())]
    )


def _pretrain_batches(
    recipe: PretrainRecipe, generator: torch.Generator
) -> Iterator[dict[str, torch.Tensor]]:
    import torch

    pool = load_digits("pretrain")
    images = torch.from_numpy(pool.images.copy())
    labels = torch.from_numpy(pool.labels.copy())
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            templates = torch.randint(0, len(CAPTION_TEMPLATES), (len(idx),), generator=generator)
            shifted = shift_images(images[idx], recipe.max_shift, generator)
            yield caption_batch(shifted, labels[idx], templates)


def _learning_rate(recipe: PretrainRecipe, step: int) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pretrain_tiny_vlm(
    recipe: PretrainRecipe = DEFAULT_RECIPE, *, progress: bool | None = None
) -> LlavaForConditionalGeneration:
    """Train a freshly initialised tiny VLM to caption the pretraining digits; deterministic per recipe.

    It runs on one CPU thread: CPU kernels sum in a different order with a different number of
    threads, and the workers of one search must share the same base weights whatever their core
    count (kernels for another instruction set may still round differently: the marker file
    records a checksum of the weights). One thread also keeps its pace when other processes load
    the cores, where two spinning threads slow down several times.
    """
    import torch
    from transformers import LlavaForConditionalGeneration

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the weights must not depend on the core count of the machine
    try:
        torch.manual_seed(recipe.seed)
        model = LlavaForConditionalGeneration(tiny_vlm_config())
        model.train()
        generator = torch.Generator().manual_seed(recipe.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        batches = _pretrain_batches(recipe, generator)
        show = sys.stderr.isatty() if progress is None else progress
        with _progress_bar(show, recipe.steps) as advance:
            for step in range(recipe.steps):
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(recipe, step)
                loss = model(**next(batches)).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                advance(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


@contextmanager
def _progress_bar(show: bool, total: int) -> Iterator[Callable[[float], None]]:
    """A rich progress bar on stderr when asked for (a TTY by default); silent otherwise."""
    if not show:
        yield lambda loss: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn(f"pretraining {NAME}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("pretrain", total=total, loss=float("nan"))
        yield lambda loss: bar.update(task, advance=1, loss=loss)
