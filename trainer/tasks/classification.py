"""Text classification with a pretrained encoder: mean pooling and a new linear head.

The head is attached to the encoder itself as the submodule ``classifier`` rather than wrapping
the encoder in a new module: the encoder's module names stay exactly those of the plain model
(``encoder.layer.0.attention.self.query`` for MiniLM), so a schedule planned on the model spec
applies to the task's model as is. ``classifier`` is a head name the site rules never adapt; it is
trained in full and listed in ``head_modules``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ranktune.trainer.tasks.base import (
    SPLITS,
    Batch,
    Split,
    Task,
    evaluating,
    model_device,
    sha256_of,
    tensor_batches,
    to_device,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

HEAD_NAME = "classifier"
HEAD_SEED = 0  # the new head's initialisation: the same for every trial of a search
MAX_LENGTH = 32


def load_encoder(model_dir: Path) -> nn.Module:
    """``AutoModel`` from a local directory in fp32; never touches the network."""
    from transformers import AutoModel

    from ranktune.trainer.builtin.pretrain import quiet_transformers

    with quiet_transformers():
        return AutoModel.from_pretrained(model_dir, local_files_only=True, dtype="float32")  # type: ignore[no-any-return]


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if tokenizer.pad_token is None:  # decoder-only tokenizers: padding is masked out anyway
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def attach_classifier(encoder: nn.Module, num_labels: int) -> nn.Module:
    """Freeze ``encoder`` and give it a trainable ``classifier`` head, initialised from ``HEAD_SEED``."""
    import torch
    from torch import nn

    config: Any = encoder.config
    hidden = config.get_text_config().hidden_size
    encoder.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(HEAD_SEED)
        head = nn.Linear(hidden, num_labels)
    encoder.add_module(HEAD_NAME, head)
    return encoder


def find_head(model: nn.Module) -> nn.Module:
    """The head module, also inside wrappers (PEFT names it ``base_model.model.classifier``)."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == HEAD_NAME:
            return module  # the outermost match: a wrapper around the head, if any
    raise ValueError(f"the model has no {HEAD_NAME!r} head: build it with the task's build_model()")


def class_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean of the last hidden states over real tokens, through the head."""
    inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, model_device(model))
    hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return find_head(model)(pooled)  # type: ignore[no-any-return]


class TextClassificationTask(Task):
    """A pretrained encoder plus a new head; subclasses supply texts and integer labels per split."""

    head_modules = (HEAD_NAME,)
    max_length = MAX_LENGTH

    def __init__(self, model_dir: Path, label_names: Sequence[str]) -> None:
        self.model_dir = model_dir
        self.label_names = tuple(label_names)
        self._tokenizer: Any = None
        self._tensors: dict[Split, Batch] = {}

    @abstractmethod
    def examples(self, split: Split) -> tuple[list[str], list[int]]:
        """Texts and label ids of ``split``."""

    def tensors(self, split: Split) -> Batch:
        import torch

        if split not in self._tensors:
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(self.model_dir)
            texts, labels = self.examples(split)
            encoded = self._tokenizer(
                texts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            tensors = {key: value for key, value in encoded.items() if isinstance(value, torch.Tensor)}
            tensors["labels"] = torch.tensor(labels, dtype=torch.long)
            self._tensors[split] = tensors
        return self._tensors[split]

    def build_model(self) -> nn.Module:
        return attach_classifier(load_encoder(self.model_dir), len(self.label_names))

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        return tensor_batches(self.tensors(split), split, batch_size, seed)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        import torch.nn.functional as F

        logits = class_logits(model, batch)
        return F.cross_entropy(logits.float(), batch["labels"].to(logits.device))

    def evaluate_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        import torch

        right = []
        with evaluating(model):
            for batch in self.batches(split, batch_size, seed=0):
                logits = class_logits(model, batch)
                right.append(logits.argmax(dim=-1).cpu() == batch["labels"])
        return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool)

    def split_size(self, split: Split) -> int:
        return len(self.examples(split)[1])

    def data_sha256(self) -> str:
        return sha256_of(self.label_names, self.max_length, *(self.examples(s) for s in SPLITS))


class BuiltinTextTask(TextClassificationTask):
    """A built-in text task on ``builtin:minilm`` (or another local encoder directory) whose splits
    are made once, all together, by ``make_examples`` (so no example lands in two splits)."""

    labels: ClassVar[tuple[str, ...]]

    def __init__(self, model_dir: str | Path | None = None) -> None:
        """``model_dir``: another local encoder directory to use instead of the bundled MiniLM."""
        from ranktune.trainer.models import minilm_dir

        super().__init__(Path(model_dir) if model_dir is not None else minilm_dir(), self.labels)
        self._examples: dict[Split, tuple[list[str], list[int]]] | None = None

    @abstractmethod
    def make_examples(self) -> dict[Split, tuple[list[str], list[int]]]:
        """Texts and label ids of every split."""

    def examples(self, split: Split) -> tuple[list[str], list[int]]:
        if self._examples is None:
            self._examples = self.make_examples()
        return self._examples[split]
