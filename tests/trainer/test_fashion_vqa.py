"""builtin:fashion-vqa: Fashion-MNIST read from IDX files, questions in words, a grown vocabulary."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ranktune.trainer.builtin import fashion_mnist
from ranktune.trainer.builtin.fashion_mnist import DIR_ENV, load_fashion, read_idx
from ranktune.trainer.builtin.tiny_vlm import VOCAB_SIZE, VOCABULARY
from ranktune.trainer.errors import TaskError
from ranktune.trainer.tasks.fashion_vqa import (
    ANSWERS,
    FASHION_VOCAB_SIZE,
    WORD_IDS,
    FashionVQATask,
    grow_vocabulary,
    make_questions,
)
from ranktune.trainer.tasks.registry import load_task
from tests.trainer.training import head_losses


def write_idx(path: Path, values: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    data = header + values.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def write_fashion(folder: Path, train: int = 70, test: int = 20, compress: bool = True) -> None:
    rng = np.random.default_rng(0)
    for stem, n in (("train", train), ("t10k", test)):
        labels = np.arange(n) % 10
        images = (labels[:, None, None] * 25 + rng.integers(0, 5, (n, 28, 28))).astype(np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte", images, 2051, compress)
        write_idx(folder / f"{stem}-labels-idx1-ubyte", labels, 2049, compress)


@pytest.fixture
def small_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_fashion(tmp_path)
    monkeypatch.setenv(DIR_ENV, str(tmp_path))
    return tmp_path


def test_idx_files_are_read_gzipped_or_plain(tmp_path: Path) -> None:
    for compress in (True, False):
        folder = tmp_path / str(compress)
        folder.mkdir()
        write_fashion(folder, compress=compress)
        images = load_fashion("test", folder)
        assert images.images.shape == (20, 1, 28, 28) and images.images.dtype == np.float32
        expected = (images.labels * 25 / 255.0)[:, None, None, None]
        assert np.all(images.images >= expected - 1e-6) and np.all(images.images <= expected + 5 / 255)


def test_pools_are_disjoint_and_fixed(small_fashion: Path) -> None:
    train, val = load_fashion("train"), load_fashion("val")
    assert len(train) == 60 and len(val) == 10  # 6:1 of a 70-row file
    assert not set(train.indices.tolist()) & set(val.indices.tolist())
    assert np.array_equal(load_fashion("val").indices, val.indices)
    assert len(load_fashion("test")) == 20


def test_missing_files_name_the_debian_package_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=f"apt-get install dataset-fashion-mnist, or set {DIR_ENV}"):
        load_fashion("train", tmp_path)


def test_a_file_that_is_not_idx_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 3)
    with pytest.raises(TaskError, match="not an IDX file"):
        read_idx(tmp_path / "x", 2051)
    write_idx(tmp_path / "y", np.zeros((2, 28, 28)), 2051, compress=False)
    (tmp_path / "y").write_bytes((tmp_path / "y").read_bytes()[:-5])
    with pytest.raises(TaskError, match="its header says"):
        read_idx(tmp_path / "y", 2051)


def test_questions_follow_the_label_and_use_known_words() -> None:
    labels = np.arange(10)
    questions = make_questions(labels, per_image=3, seed=0)
    assert len(questions) == 30
    answer = {(q.image, q.question): q.answer for q in questions}
    assert answer[(7, "what is this ?")] == "sneaker" and answer[(9, "is this a shoe ?")] == "yes"
    assert answer[(8, "is this a shoe or a bag or clothing ?")] == "bag"
    assert answer[(0, "is this a shoe or a bag or clothing ?")] == "clothing"
    words = {w for q in questions for w in (q.question + " " + q.answer).split()}
    assert words <= set(WORD_IDS)
    assert [WORD_IDS[w] for w in VOCABULARY] == list(range(len(VOCABULARY)))  # digits-vqa's ids unchanged
    assert sorted(WORD_IDS[a] for a in ANSWERS) == list(range(VOCAB_SIZE, VOCAB_SIZE + 10))


def test_growing_the_vocabulary_keeps_the_old_rows_and_ties_the_output(pretrained_tiny_vlm_dir: Path) -> None:
    from ranktune.trainer.builtin.pretrain import frozen_tiny_vlm

    model = frozen_tiny_vlm()
    before = model.get_input_embeddings().weight.detach().clone()
    grow_vocabulary(model)
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] == FASHION_VOCAB_SIZE and weight.requires_grad
    assert torch.equal(weight[:VOCAB_SIZE], before)
    assert model.get_output_embeddings().weight is weight
    new = weight[VOCAB_SIZE:].detach()
    assert 0.5 < float(new.std() / before.std()) < 1.5 and torch.linalg.matrix_rank(new) == new.shape[0]


needs_package = pytest.mark.skipif(
    not os.environ.get("RANKTUNE_REQUIRE_DATASETS") and not fashion_mnist.DEFAULT_DIR.is_dir(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)


@needs_package
def test_the_real_data_set_has_large_splits_and_trains(pretrained_tiny_vlm_dir: Path) -> None:
    task = load_task("builtin:fashion-vqa", "builtin:tiny-vlm")
    assert isinstance(task, FashionVQATask)
    assert {s: task.split_size(s) for s in ("train", "val", "test")} == {"train": 24_000, "val": 2_000,
                                                                         "test": 6_000}  # fmt: skip
    test_images = load_fashion("test")
    assert np.bincount(test_images.labels, minlength=10).min() > 500
    model = task.build_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"model.language_model.embed_tokens.weight"}
    losses = head_losses(task, model, steps=10, lr=1e-2)
    assert min(losses[5:]) < losses[0]
