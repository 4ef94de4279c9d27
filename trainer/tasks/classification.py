"""Text classification with a pretrained encoder: mean pooling and a new linear head, or the
model's own head when its directory names a ``…ForSequenceClassification`` class.

The model is loaded in the class its directory names (``trainer.models.model_class``), the class
planning builds: module names stay exactly those a plan lists (``encoder.layer.0.attention.self.query``
for MiniLM's ``BertModel``, ``bert.encoder.layer.0…`` for a ``BertForSequenceClassification``).

- A bare encoder (``BertModel``, MiniLM) gets a new head attached to the model itself as the
  submodule ``classifier``, over the mean of the last hidden states. ``classifier`` is a head name
  the site rules never adapt; it is trained in full and listed in ``head_modules``.
- A ``…ForSequenceClassification`` keeps its own head (``classifier``, ``score``, …: its top-level
  modules outside the base model), re-sized to the labels when their number differs (a new final
  layer from ``HEAD_SEED``). It is trained in full and written with the adapter (``saved_heads``,
  PEFT's ``modules_to_save``), so the adapter loads into that class with every weight matched.

Texts are cut at ``max_length`` tokens (``MAX_LENGTH``, or the task's own), or at ``proxy.max_seq_len``
when a run sets it (at most the model's positions).
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
    check_max_seq_len,
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
    """The model of a local directory in the class it names, in fp32; never touches the network."""
    from ranktune.trainer.models import load_pretrained

    return load_pretrained(model_dir)


def own_heads(model_dir: Path) -> tuple[str, ...]:
    """A ``…ForSequenceClassification``'s head modules (top-level, outside its base model); () for
    any other class. Found on the ``meta`` device: no weights are read."""
    from transformers import AutoConfig

    from ranktune.trainer.models import build_on_meta, is_sequence_classifier

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    if not is_sequence_classifier(config):
        return ()
    try:
        model: Any = build_on_meta(config)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, AttributeError) as e:
        raise TaskError(f"model: cannot build {model_dir} ({type(e).__name__}: {e})", field="model") from e
    return tuple(
        name
        for name, child in model.named_children()
        if name != model.base_model_prefix and any(True for _ in child.parameters())
    )


def label_order(model_dir: Path, labels: Sequence[str]) -> list[str]:
    """``labels`` sorted, or in the checkpoint's own order when its head was trained on exactly them."""
    from transformers import AutoConfig

    from ranktune.trainer.models import is_image_classifier, is_sequence_classifier

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    own = [str(config.id2label[i]) for i in sorted(config.id2label)] if config.id2label else []
    has_head = is_sequence_classifier(config) or is_image_classifier(config)
    return own if sorted(own) == sorted(labels) and has_head else sorted(labels)


def fit_own_head(model: nn.Module, heads: Sequence[str], label_names: Sequence[str]) -> nn.Module:
    """Freeze ``model`` but its head; a head of another size gets a new final layer from ``HEAD_SEED``."""
    import torch
    from torch import nn

    config: Any = model.config
    model.requires_grad_(False)
    if config.num_labels != len(label_names):
        finals = [
            (f"{head}.{name}" if name else head, module)
            for head in heads
            for name, module in model.get_submodule(head).named_modules()
            if isinstance(module, nn.Linear) and module.out_features == config.num_labels
        ]
        if not finals:
            raise TaskError(
                f"model: no layer of its head ({', '.join(heads)}) has one output per label "
                f"({config.num_labels}), so it cannot be re-sized to {len(label_names)} labels",
                field="model",
            )
        name, old = finals[-1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(HEAD_SEED)
            new = nn.Linear(old.in_features, len(label_names), bias=old.bias is not None)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
        config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {label: i for i, label in enumerate(label_names)}
    for head in heads:
        model.get_submodule(head).requires_grad_(True)
    return model


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


def backbone(model: nn.Module) -> nn.Module:
    """What returns ``last_hidden_state``: a bare encoder itself, a model with an LM head its base."""
    from transformers import PreTrainedModel

    return model.base_model if isinstance(model, PreTrainedModel) else model


def class_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean of the last hidden states over real tokens, through the head."""
    inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, model_device(model))
    hidden = backbone(model)(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return find_head(model)(pooled)  # type: ignore[no-any-return]


class LabelledTask(Task):
    """A task scored by a class per example: cross-entropy on ``logits``, accuracy by their argmax
    (text classifiers here, vision transformers in ``image_classification``)."""

    @abstractmethod
    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The class logits of ``batch`` (examples × labels)."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        import torch.nn.functional as F

        logits = self.logits(model, batch)
        return F.cross_entropy(logits.float(), batch["labels"].to(logits.device))

    def evaluate_outcomes(
        self, model: nn.Module, split: Split = "val", batch_size: int = 256
    ) -> torch.Tensor:
        import torch

        right = []
        with evaluating(model):
            for batch in self.batches(split, batch_size, seed=0):
                logits = self.logits(model, batch)
                right.append(logits.argmax(dim=-1).cpu() == batch["labels"])
        return torch.cat(right) if right else torch.zeros(0, dtype=torch.bool)


class TextClassificationTask(LabelledTask):
    """A pretrained encoder plus a new head, or a sequence classifier with its own head; subclasses
    supply texts and integer labels per split."""

    head_modules: tuple[str, ...] = (HEAD_NAME,)
    max_length = MAX_LENGTH

    def __init__(self, model_dir: Path, label_names: Sequence[str]) -> None:
        self.model_dir = model_dir
        self.label_names = tuple(label_names)
        self._tokenizer: Any = None
        self._tensors: dict[Split, Batch] = {}
        heads = own_heads(model_dir)
        if heads:
            self.head_modules = self.saved_heads = heads
        self.own_head = bool(heads)

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

    def set_max_seq_len(self, max_seq_len: int | None) -> None:
        if max_seq_len is not None:
            check_max_seq_len(max_seq_len, self.model_dir)
        wanted = max_seq_len or type(self).max_length
        if wanted != self.max_length:
            self.max_length = wanted
            self._tensors = {}

    def build_model(self) -> nn.Module:
        model = load_encoder(self.model_dir)
        if not self.own_head:
            return attach_classifier(model, len(self.label_names))
        config: Any = model.config
        if config.pad_token_id is None:  # decoder classifiers find each row's last token by it
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(self.model_dir)
            config.pad_token_id = self._tokenizer.pad_token_id
        return fit_own_head(model, self.head_modules, self.label_names)

    def logits(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if not self.own_head:
            return class_logits(model, batch)
        inputs = to_device({k: v for k, v in batch.items() if k != "labels"}, model_device(model))
        return model(**inputs).logits  # type: ignore[no-any-return]

    def batches(self, split: Split, batch_size: int, seed: int) -> Iterator[Batch]:
        return tensor_batches(self.tensors(split), split, batch_size, seed)

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
