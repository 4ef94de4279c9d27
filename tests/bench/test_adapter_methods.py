"""Smoke test of bench/adapter_methods.py on small Fashion-MNIST IDX files with 2 steps: every method
is measured, stored once (a rerun trains nothing) and rendered with its spread and paired gains."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import adapter_methods, task_headroom
from ranktune.trainer.builtin.fashion_mnist import DIR_ENV
from tests.trainer.test_fashion_vqa import write_fashion

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fashion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_torch_thread: None) -> Iterator[None]:
    (tmp_path / "idx").mkdir()
    write_fashion(tmp_path / "idx")
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "idx"))
    adapter_methods.encoded_task.cache_clear()
    task_headroom.fingerprints.cache_clear()
    yield
    adapter_methods.encoded_task.cache_clear()  # they hold this test's small data
    task_headroom.fingerprints.cache_clear()


def test_every_method_is_measured_stored_and_rendered(
    small_fashion: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "runs.jsonl"
    adapter_methods.main(["--steps", "2", "--seeds", "1", "--store", str(store)])
    assert len(store.read_text().splitlines()) == 4
    assert "| head only | 970 | 0 | 1 |" in capsys.readouterr().out
    adapter_methods.main(["--steps", "2", "--seeds", "2", "--store", str(store), "--methods",
                          "lora,dmlora,full"])  # fmt: skip
    assert len(store.read_text().splitlines()) == 4 + 3  # seed 0 was stored: only seed 1 trains
    text = capsys.readouterr().out
    assert "| LoRA, uniform rank 8 | 43,978 | 43,008 | 2 |" in text and "head only" not in text
    assert "| DMLoRA, rank 8 (4 branches of 2) | 43,978 |" in text
    assert "| full fine-tuning | 306,922 | - | 2 |" in text
    assert "| DMLoRA, rank 8 (4 branches of 2) − LoRA |" in text and "20 test images" in text


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(SystemExit):
        adapter_methods.main(["--methods", "lora,qlora", "--no-run"])
