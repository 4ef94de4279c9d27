"""``ranktune import-gguf``: a GGUF checkpoint as a model directory that train, plan and searches load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranktune.service.cli.common import out, user_errors


@user_errors
def import_gguf(
    gguf_file: Annotated[Path, typer.Argument(help="The .gguf file (llama.cpp's format; any quantization)")],
    out_dir: Annotated[
        Path, typer.Argument(help="New directory for config.json, model.safetensors, tokenizer")
    ],
) -> None:
    """De-quantize a GGUF causal LM into a plain model directory (needs `pip install gguf`)."""
    from ranktune.trainer.gguf import convert_gguf

    written = convert_gguf(gguf_file, out_dir)
    out.print(
        f'wrote {written}: use it as --model / "model" in a search spec', highlight=False, soft_wrap=True
    )
