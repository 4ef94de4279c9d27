"""A committed tiny-VLM base goes into the cache as is, checked against its marker's sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench.install_base import install, marked_sha256
from ranktune.trainer.builtin.pretrain import MARKER_FILE


def fake_base(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    marker = {"model": "builtin:tiny-vlm", "weights_sha256": hashlib.sha256(weights).hexdigest()}
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    return folder


def test_a_base_is_installed_once_and_a_different_one_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANKTUNE_CACHE_DIR", str(tmp_path / "cache"))
    first = fake_base(tmp_path / "a", b"weights of machine kind a")
    target = install(first)
    assert target.is_relative_to(tmp_path / "cache")
    assert marked_sha256(target) == marked_sha256(first)
    assert install(first) == target, "the same base again: nothing to do"
    other = fake_base(tmp_path / "b", b"weights of machine kind b")
    with pytest.raises(SystemExit, match="--replace"):
        install(other)
    assert marked_sha256(install(other, replace=True)) == marked_sha256(other)


def test_a_base_whose_weights_do_not_match_its_marker_is_refused(tmp_path: Path) -> None:
    base = fake_base(tmp_path / "a", b"weights")
    (base / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="its marker says"):
        marked_sha256(base)
    with pytest.raises(SystemExit, match="not a tiny-VLM base"):
        marked_sha256(tmp_path)
