"""Install a committed tiny-VLM base into the cache, so tiny-vlm stores resume on any machine.

The built-in tiny VLM is pretrained on first use, deterministically for one machine kind: another
instruction set rounds differently and builds other weights (sha256 ``b9f17419…``, ``c2743daf…`` and
``cdc289d1…`` so far), and a run store's keys carry that sha256, so a store made on one kind trains
everything again on another. ``bench/bases/`` keeps the base of the stores in bench/runs as it was
built (the cache directory as is: weights, configs, tokenizer and the marker with its sha256); this
copies one into the cache (``RANKTUNE_CACHE_DIR`` or the default) before a bench runs.

Run: .venv/bin/python bench/install_base.py bench/bases/tiny-vlm-v1-cdc289d1 [--replace]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ranktune.trainer.builtin.pretrain import MARKER_FILE, cache_path  # noqa: E402

WEIGHTS = "model.safetensors"


def marked_sha256(base: Path) -> str:
    """The base's weights sha256 as its marker states it, checked against the weights file."""
    marker = base / MARKER_FILE
    if not marker.is_file() or not (base / WEIGHTS).is_file():
        raise SystemExit(f"{base}: not a tiny-VLM base (needs {MARKER_FILE} and {WEIGHTS})")
    stated = str(json.loads(marker.read_text())["weights_sha256"])
    actual = hashlib.sha256((base / WEIGHTS).read_bytes()).hexdigest()
    if actual != stated:
        raise SystemExit(f"{base}: {WEIGHTS} has sha256 {actual[:12]}…, its marker says {stated[:12]}…")
    return stated


def install(base: Path, replace: bool = False) -> Path:
    """Copy ``base`` to the cache; an existing different base stays unless ``replace``."""
    sha = marked_sha256(base)
    target = cache_path()
    if (target / MARKER_FILE).is_file():
        present = str(json.loads((target / MARKER_FILE).read_text())["weights_sha256"])
        if present == sha:
            return target
        if not replace:
            raise SystemExit(f"{target} holds base {present[:8]}…, not {sha[:8]}…: pass --replace to swap it")
        shutil.rmtree(target)
    elif target.exists():
        shutil.rmtree(target)  # a build that never finished (no marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(base, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("base", type=Path, help="a directory under bench/bases")
    parser.add_argument("--replace", action="store_true", help="swap out a different base in the cache")
    args = parser.parse_args()
    target = install(args.base, args.replace)
    print(f"{target}: base {marked_sha256(target)[:12]}…")


if __name__ == "__main__":
    main()
