from __future__ import annotations

import warnings

import pytest

from ranktune.search.sites import SiteHeuristicWarning, build_sites, classify_module


@pytest.mark.parametrize(
    ("name", "model_type", "expected"),
    [
        ("model.vision_tower.encoder.layers.3.self_attn.out_proj", "llava", ("vision", 3, "o")),
        ("model.multi_modal_projector.linear_2", "llava", ("projector", None, "fc2")),
        ("model.language_model.layers.1.mlp.gate_proj", "llava", ("language", 1, "gate")),
        ("model.visual.blocks.0.attn.qkv", "qwen2_vl", ("vision", 0, "qkv")),
        ("model.visual.blocks.0.attn.proj", "qwen2_vl", ("vision", 0, "o")),
        ("model.visual.merger.mlp.2", "qwen2_vl", ("projector", None, "fc2")),
        ("model.connector.modality_projection.proj", "idefics3", ("projector", None, "proj")),
        ("bert.encoder.layer.5.attention.output.dense", "bert", ("language", 5, "o")),
        ("bert.encoder.layer.5.intermediate.dense", "bert", ("language", 5, "fc1")),
        ("bert.encoder.layer.5.output.dense", "bert", ("language", 5, "fc2")),
        ("vit.layers.1.mlp.fc1", "vit", ("vision", 1, "fc1")),
    ],
)
def test_classification(name: str, model_type: str, expected: tuple) -> None:
    found = classify_module(name, model_type)
    assert found is not None
    assert (found.tower, found.layer, found.kind) == expected
    assert not found.heuristic


@pytest.mark.parametrize(
    "name",
    ["lm_head", "classifier", "bert.pooler.dense", "score", "model.embed_tokens", "cls.predictions.dense"],
)
def test_heads_and_embeddings_are_never_sites(name: str) -> None:
    assert classify_module(name, "llama") is None


def test_unknown_architecture_warns() -> None:
    with pytest.warns(SiteHeuristicWarning, match="not a known architecture"):
        sites = build_sites([("blocks.0.attn.c_attn", 8, 24), ("blocks.0.mixer", 8, 8)], "mystery")
    assert [s.kind for s in sites] == ["qkv", "mixer"]


def test_known_architecture_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_sites([("model.layers.0.self_attn.q_proj", 8, 8)], "llama")
