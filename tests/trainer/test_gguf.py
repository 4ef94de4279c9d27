"""GGUF checkpoints become plain model directories: a tiny llama GGUF written here with the gguf package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ranktune.service.cli.app import app
from ranktune.trainer.errors import TaskError
from ranktune.trainer.gguf import convert_gguf
from ranktune.trainer.models import load_pretrained
from ranktune.trainer.sites import discover_sites

gguf = pytest.importorskip("gguf")  # a dev dependency: only converting needs it, never the service
HIDDEN, FFN, LAYERS, HEADS = 32, 48, 2, 4
VOCAB = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁the", "▁sky", "▁is", "▁blue"]


def write_tiny_llama_gguf(path: Path) -> dict[str, np.ndarray]:
    """A llama-architecture GGUF with a SentencePiece-style vocabulary (byte fallback), f32 tensors."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_block_count(LAYERS)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10_000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(VOCAB))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(VOCAB)
    writer.add_token_scores([0.0] * len(VOCAB))
    writer.add_token_types([3, 3, 3] + [1] * (len(VOCAB) - 3))  # control tokens, then normal ones
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(0)
    tensors = {"token_embd.weight": rng.standard_normal((len(VOCAB), HIDDEN)).astype(np.float32)}
    for i in range(LAYERS):
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors[f"blk.{i}.{name}.weight"] = rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
        tensors[f"blk.{i}.ffn_gate.weight"] = rng.standard_normal((FFN, HIDDEN)).astype(np.float32)
        tensors[f"blk.{i}.ffn_up.weight"] = rng.standard_normal((FFN, HIDDEN)).astype(np.float32)
        tensors[f"blk.{i}.ffn_down.weight"] = rng.standard_normal((HIDDEN, FFN)).astype(np.float32)
        tensors[f"blk.{i}.attn_norm.weight"] = np.ones(HIDDEN, np.float32)
        tensors[f"blk.{i}.ffn_norm.weight"] = np.ones(HIDDEN, np.float32)
    tensors["output_norm.weight"] = np.ones(HIDDEN, np.float32)
    tensors["output.weight"] = rng.standard_normal((len(VOCAB), HIDDEN)).astype(np.float32)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_a_gguf_becomes_a_model_directory_every_task_loads(tmp_path: Path) -> None:
    tensors = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert "quantization_config" not in (out / "config.json").read_text()
    model = load_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    embedding, down = tensors["token_embd.weight"], tensors["blk.1.ffn_down.weight"]
    torch.testing.assert_close(model.model.embed_tokens.weight, torch.from_numpy(embedding))
    torch.testing.assert_close(model.model.layers[1].mlp.down_proj.weight, torch.from_numpy(down))
    assert len(discover_sites(model)) == 7 * LAYERS
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(out)
    original = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    ids = saved("the sky is blue").input_ids
    assert ids == original("the sky is blue").input_ids and ids[0] == 1 and len(ids) > 4
    assert saved.decode(ids) == original.decode(ids)


def test_bad_inputs_name_the_model_field_and_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="is not a file") as missing:
        convert_gguf(tmp_path / "absent.gguf", tmp_path / "out")
    assert missing.value.field == "model" and not (tmp_path / "out").exists()
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(TaskError, match="cannot read"):
        convert_gguf(tmp_path / "junk.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    with pytest.raises(TaskError, match="already holds a model"):
        convert_gguf(tmp_path / "tiny.gguf", tmp_path / "taken")
    assert (tmp_path / "taken" / "config.json").read_text() == "{}"


def test_the_cli_verb_converts_and_reports_errors_as_exit_2(tmp_path: Path) -> None:
    write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    runner = CliRunner()
    done = runner.invoke(app, ["import-gguf", str(tmp_path / "tiny.gguf"), str(tmp_path / "model")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "model" / "model.safetensors").is_file() and str(tmp_path / "model") in done.output
    again = runner.invoke(app, ["import-gguf", str(tmp_path / "tiny.gguf"), str(tmp_path / "model")])
    assert again.exit_code == 2 and "already holds a model" in again.output
