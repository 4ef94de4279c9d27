"""Fixtures shared by the bench smoke tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """As the benches run by default (on shared cores 2 threads spin-wait for each other); the thread
    count is also part of every fine-tune's key in a run store."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
