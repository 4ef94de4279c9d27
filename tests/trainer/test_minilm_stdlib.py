"""builtin:minilm-stdlib: real docstrings of the standard library, split per owner, on MiniLM."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from ranktune.trainer.tasks import minilm_stdlib
from ranktune.trainer.tasks.minilm_stdlib import LABELS, MiniLMStdlibTask, module_docstrings, summary
from ranktune.trainer.tasks.registry import load_task


@pytest.fixture(scope="module")
def stdlib() -> MiniLMStdlibTask:
    return MiniLMStdlibTask()


def test_examples_are_real_docstrings_of_their_area(stdlib: MiniLMStdlibTask) -> None:
    import decimal

    texts = [t for s in ("train", "val", "test") for t in stdlib.examples(s)[0]]
    labels = [y for s in ("train", "val", "test") for y in stdlib.examples(s)[1]]
    area = dict(zip(texts, labels, strict=True))
    assert area[summary(decimal.Decimal.copy_abs)] == LABELS.index("numbers")  # type: ignore[index]
    assert len(texts) == len(set(texts)) > 1800, "each distinct summary once"
    assert all(len(t.split()) >= minilm_stdlib.MIN_WORDS and "\n" not in t for t in texts)
    assert "REAL" in stdlib.description


def test_splits_keep_owners_whole_and_areas_in_proportion(stdlib: MiniLMStdlibTask) -> None:
    split_of = {text: split for split in ("train", "val", "test") for text in stdlib.examples(split)[0]}
    owners = collections.defaultdict(set)  # owner -> splits of the summaries it was first to have
    for area in LABELS:
        for module in minilm_stdlib.AREAS[area]:
            for owner, text in module_docstrings(module):
                if text in split_of:
                    owners[owner].add(split_of.pop(text))
    assert not split_of and all(len(splits) == 1 for splits in owners.values()), "no owner is cut"
    sizes = {s: len(stdlib.examples(s)[0]) for s in ("train", "val", "test")}
    total = sum(sizes.values())
    assert abs(sizes["train"] / total - 0.7) < 0.03 and abs(sizes["val"] / total - 0.15) < 0.03
    for split in ("val", "test"):
        counts = np.bincount(stdlib.examples(split)[1], minlength=len(LABELS))
        assert counts.min() >= 20, (split, counts)  # every area is in every split
    assert MiniLMStdlibTask().examples("test") == stdlib.examples("test"), "deterministic"


def test_constants_do_not_lend_their_types_docstring() -> None:
    texts = [t for _, t in module_docstrings("os")]
    assert not any(t.startswith("int([x])") for t in texts)


def test_it_trains_the_head_and_resolves_from_the_registry(stdlib: MiniLMStdlibTask) -> None:
    assert isinstance(load_task("builtin:minilm-stdlib", "builtin:minilm"), MiniLMStdlibTask)
    model = stdlib.build_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    stream = stdlib.batches("train", 32, seed=0)
    first = None
    for _ in range(8):
        loss = stdlib.loss(model, next(stream))
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first
    assert 0.0 <= stdlib.evaluate(model, "val", batch_size=128) <= 1.0
