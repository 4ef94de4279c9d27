"""A GGUF checkpoint as a plain transformers model directory that every ranktune task can load.

LoRA trains next to full-precision base weights, so a quantized GGUF file (llama.cpp's format, e.g.
``gemma-3-270m-q4_k_m.gguf``) is read once by transformers (``gguf_file=``; it de-quantizes every
tensor and needs the ``gguf`` package) and written back as ``config.json``, ``model.safetensors``
and the tokenizer's files. Tasks, planning, workers and PEFT's reload then see an ordinary directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ranktune.trainer.errors import TaskError


def convert_gguf(gguf_file: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write ``gguf_file``'s causal LM and tokenizer to ``out_dir`` (made; must not hold a model).

    Raises ``TaskError`` (field ``model``) for a missing file, a missing ``gguf`` package, an
    architecture transformers cannot read from GGUF, or an ``out_dir`` that already holds a model.
    """
    if not gguf_file.is_file():
        raise TaskError(f"model: {gguf_file} is not a file", field="model")
    if importlib.util.find_spec("gguf") is None:
        raise TaskError("model: reading a GGUF file needs the gguf package: pip install gguf", field="model")
    if (out_dir / "config.json").exists():
        raise TaskError(f"model: {out_dir} already holds a model (config.json); choose a new directory",
                        field="model")  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ranktune.trainer.builtin.pretrain import quiet_transformers

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_file.parent, gguf_file=gguf_file.name, dtype=dtype
            )
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        message = f"model: transformers cannot read {gguf_file} as a causal LM: {e}"
        raise TaskError(message, field="model") from e
    # The weights are de-quantized already: drop the GGUF quantizer so they save as plain tensors.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (a torch Module attribute mypy types as a submodule)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
