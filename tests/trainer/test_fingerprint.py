"""Fingerprints of what a result was measured on: base weights and task data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ranktune.trainer.fingerprint import base_weights_sha256
from ranktune.trainer.tasks.digits_vqa import DigitsVQATask
from ranktune.trainer.tasks.minilm_stdlib import MiniLMStdlibTask


def test_a_local_model_is_hashed_over_its_weight_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weight files"):
        base_weights_sha256(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    first = base_weights_sha256(str(tmp_path))
    (tmp_path / "config.json").write_text('{"changed": true}')  # not a weight file
    assert base_weights_sha256(str(tmp_path)) == first and len(first) == 64
    (tmp_path / "model.safetensors").write_bytes(b"weights v2!")
    assert base_weights_sha256(str(tmp_path)) != first


def test_the_tiny_vlm_hash_is_its_cache_markers(pretrained_tiny_vlm_dir: Path) -> None:
    marker = json.loads((pretrained_tiny_vlm_dir / "ranktune.json").read_text())
    assert base_weights_sha256("builtin:tiny-vlm") == marker["weights_sha256"]


def test_task_data_hashes_are_stable_and_tell_tasks_apart() -> None:
    digits = DigitsVQATask().data_sha256()
    assert digits == DigitsVQATask().data_sha256() and len(digits) == 64
    assert MiniLMStdlibTask().data_sha256() not in (digits, "")
