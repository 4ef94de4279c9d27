"""Fixtures of the trainer tests: the real pretrained built-in model, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranktune.search.grid import RankGrid
from ranktune.search.schedule import Budget
from ranktune.search.space import HierarchicalSpace


@pytest.fixture(scope="session")
def pretrained_tiny_vlm_dir() -> Path:
    """The full pretraining recipe in the default cache (about a minute the first time, then cached)."""
    from ranktune.trainer.builtin.pretrain import cache_path, load_tiny_vlm

    load_tiny_vlm()
    return cache_path()


@pytest.fixture(scope="session")
def digits_task(pretrained_tiny_vlm_dir: Path):
    from ranktune.trainer.tasks.digits_vqa import DigitsVQATask

    return DigitsVQATask()


GRID = RankGrid((0, 2, 4, 8, 16))


@pytest.fixture(scope="module")
def task():
    """The built-in VLM task (a module of its own may name another ``task``)."""
    from ranktune.trainer.tasks.registry import load_task

    return load_task("builtin:digits-vqa", "builtin:tiny-vlm")


@pytest.fixture(scope="module")
def space(task) -> HierarchicalSpace:
    """Its adapter sites at the budget of uniform rank 4."""
    from ranktune.trainer.sites import sites_of_model

    sites = sites_of_model(task.build_model())
    return HierarchicalSpace(sites, Budget.from_rank(sites, 4, GRID), GRID)
