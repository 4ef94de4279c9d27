"""Fixtures of the trainer tests: the real pretrained built-in model, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


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
