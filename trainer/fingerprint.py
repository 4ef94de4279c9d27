"""What a stored result was measured on: the base weights' sha256 and the task data's.

Figures from runs on different base weights (a tiny VLM pretrained on another machine rounds
differently) or different data must never be mixed: benchmarks put both hashes in every stored run's
key and in their reports.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def base_weights_sha256(model: str) -> str:
    """sha256 of a model spec's pretrained weights: the built-in tiny VLM's from its cache marker
    (pretrained on first use), any other model's over its weight files, in name order."""
    if model == "builtin:tiny-vlm":
        from ranktune.trainer.builtin.pretrain import MARKER_FILE, cache_path, load_tiny_vlm

        marker = cache_path() / MARKER_FILE
        if not marker.is_file():
            load_tiny_vlm()  # builds and caches the pretrained weights, marker included
        return str(json.loads(marker.read_text())["weights_sha256"])
    if model == "builtin:minilm":
        from ranktune.trainer.models import minilm_dir

        return _folder_sha256(minilm_dir())
    if model == "builtin:tiny-vlm-vision":
        from ranktune.trainer.builtin.tiny_vision import tiny_vision_dir

        return _folder_sha256(tiny_vision_dir())
    return _folder_sha256(Path(model).expanduser())


def _folder_sha256(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"model: no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {folder}")
    return _files_sha256(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@lru_cache(maxsize=16)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
