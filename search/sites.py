"""Adapter sites: the adaptable linear layers of a model, described without torch.

A linear layer is an ``nn.Linear`` (weight out×in) or transformers' ``Conv1D`` (GPT-2 and its
relatives; weight stored transposed, in×out: the site's ``fan_in_fan_out``, which PEFT must be told).

``classify_module`` turns a module's full name into its tower, layer index and kind. It is pure
string logic so that ``search/`` stays free of torch; walking a real model lives in ``trainer/``.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ranktune.search.errors import SiteError

Tower = Literal["vision", "projector", "language"]
TOWERS: tuple[Tower, ...] = ("vision", "projector", "language")


class SiteHeuristicWarning(UserWarning):
    """Sites were found by name heuristics rather than a known architecture's rules."""


@dataclass(frozen=True, order=True)
class AdapterSite:
    """One adaptable linear layer: where it is, what it does and its shape."""

    name: str
    tower: Tower
    layer: int | None
    kind: str
    in_features: int
    out_features: int
    fan_in_fan_out: bool = False  # the weight is stored in×out (transformers' Conv1D), not out×in

    def __post_init__(self) -> None:
        if self.tower not in TOWERS:
            raise SiteError(f"site {self.name}: tower must be one of {TOWERS}, got {self.tower!r}")
        if self.in_features <= 0 or self.out_features <= 0:
            raise SiteError(f"site {self.name}: in/out features must be positive")

    @property
    def max_rank(self) -> int:
        """A LoRA rank above min(in, out) adds parameters but no expressiveness."""
        return min(self.in_features, self.out_features)

    @property
    def params_per_rank(self) -> int:
        return self.in_features + self.out_features

    def to_json(self) -> dict[str, Any]:
        return dict(_site_json(self))  # a copy: the caller may change it

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdapterSite:
        try:
            return cls(
                name=str(data["name"]),
                tower=data["tower"],
                layer=None if data.get("layer") is None else int(data["layer"]),
                kind=str(data["kind"]),
                in_features=int(data["in_features"]),
                out_features=int(data["out_features"]),
                fan_in_fan_out=bool(data.get("fan_in_fan_out", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SiteError(f"site: malformed site record {data!r} ({e})", field="sites") from e


@functools.lru_cache(maxsize=65_536)
def _site_json(site: AdapterSite) -> dict[str, Any]:
    """A site's JSON, built once per distinct site: every stored schedule lists every site, and
    ``dataclasses.asdict`` was the largest single cost of queueing a trial (bench/bench_leases.py)."""
    data = asdict(site)
    if not site.fan_in_fan_out:
        del data["fan_in_fan_out"]  # sites of nn.Linear keep the JSON they had before Conv1D sites
    return data


@dataclass(frozen=True)
class SiteClass:
    """What a module name says about a site, before its shape is known."""

    tower: Tower
    layer: int | None
    kind: str
    heuristic: bool  # True when the kind came from the fallback, not a known name


# Architectures whose module names the rules below are known (and tested) to cover.
KNOWN_MODEL_TYPES = frozenset(
    {
        "llava", "llava_next", "idefics3", "smolvlm", "qwen2_vl", "qwen2_5_vl", "paligemma",
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "gpt2",
        "bert", "roberta", "vit", "deit", "dinov2", "clip", "clip_vision_model", "siglip",
        "siglip_vision_model",
    }
)  # fmt: skip
VISION_ONLY_MODEL_TYPES = frozenset(
    {"vit", "deit", "beit", "dinov2", "clip_vision_model", "siglip_vision_model", "swin"}
)

_HEAD_PARTS = frozenset(
    {"lm_head", "classifier", "score", "qa_outputs", "pooler", "head", "heads", "cls", "prediction_head"}
)
_PROJECTOR_PARTS = frozenset({"multi_modal_projector", "connector", "merger", "mm_projector", "projector"})
_VISION_PARTS = frozenset(
    {"vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder", "vision"}
)
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|layer|blocks|block|h)\.(\d+)(?:\.|$)")

_KIND_BY_LEAF = {
    "q_proj": "q", "query": "q", "wq": "q", "q_lin": "q",
    "k_proj": "k", "key": "k", "wk": "k", "k_lin": "k",
    "v_proj": "v", "value": "v", "wv": "v", "v_lin": "v",
    "o_proj": "o", "out_proj": "o", "wo": "o", "out_lin": "o",
    "qkv": "qkv", "qkv_proj": "qkv", "wqkv": "qkv", "query_key_value": "qkv", "c_attn": "qkv",
    "gate_proj": "gate", "w1": "gate",
    "up_proj": "up", "w3": "up",
    "down_proj": "down", "w2": "down",
    "fc1": "fc1", "lin1": "fc1", "c_fc": "fc1", "dense_h_to_4h": "fc1", "linear_1": "fc1",
    "fc2": "fc2", "lin2": "fc2", "dense_4h_to_h": "fc2", "linear_2": "fc2",
}  # fmt: skip
KIND_ORDER = ("q", "k", "v", "qkv", "o", "gate", "up", "down", "fc1", "fc2", "fc3", "proj")
_ATTENTION_PARTS = frozenset({"attn", "self_attn", "attention", "self_attention"})


def is_excluded(name: str) -> bool:
    """Heads, poolers and embeddings are never adapter sites."""
    return any(part in _HEAD_PARTS or "embed" in part for part in name.lower().split("."))


def tower_of(name: str, model_type: str | None) -> Tower:
    parts = name.split(".")
    if any(p in _PROJECTOR_PARTS for p in parts):
        return "projector"
    if any(p in _VISION_PARTS for p in parts):
        return "vision"
    if model_type in VISION_ONLY_MODEL_TYPES:
        return "vision"
    return "language"


def layer_of(name: str) -> int | None:
    match = _LAYER_RE.search(name)
    return int(match.group(1)) if match else None


def kind_of(name: str, tower: Tower) -> tuple[str, bool]:
    """The module's role, and whether it was only guessed from its leaf name."""
    parts = name.split(".")
    leaf = parts[-1].lower()
    parent = parts[-2].lower() if len(parts) > 1 else ""
    grandparent = parts[-3].lower() if len(parts) > 2 else ""
    if leaf in _KIND_BY_LEAF:
        return _KIND_BY_LEAF[leaf], False
    if leaf == "proj" and parent in _ATTENTION_PARTS:
        return "o", False  # Qwen2-VL's vision attention output
    if leaf == "c_proj" and (parent in _ATTENTION_PARTS or parent == "mlp"):
        return ("o" if parent in _ATTENTION_PARTS else "fc2"), False  # GPT-2: attn.c_proj, mlp.c_proj
    if tower == "projector":
        if leaf.isdigit():  # nn.Sequential projector: mlp.0 / mlp.2
            return ("fc1" if int(leaf) == 0 else f"fc{int(leaf) // 2 + 1}"), False
        return "proj", False
    if leaf == "dense":
        if parent == "output" and grandparent == "attention":
            return "o", False  # BERT-style attention output
        if parent in _ATTENTION_PARTS:
            return "o", False  # GPT-NeoX style attention.dense
        if parent == "intermediate":
            return "fc1", False
        if parent == "output":
            return "fc2", False
    return re.sub(r"[^a-z0-9_]", "_", leaf), True


def classify_module(name: str, model_type: str | None) -> SiteClass | None:
    """Classify one linear module by its full name; None when it is never a site."""
    if is_excluded(name):
        return None
    tower = tower_of(name, model_type)
    layer = None if tower == "projector" else layer_of(name)
    if tower != "projector" and layer is None:
        return None  # outside the layer stack (e.g. a final norm projection): not searched
    kind, guessed = kind_of(name, tower)
    return SiteClass(tower=tower, layer=layer, kind=kind, heuristic=guessed)


LinearModule = tuple[str, int, int] | tuple[str, int, int, bool]


def build_sites(linears: Sequence[LinearModule], model_type: str | None) -> tuple[AdapterSite, ...]:
    """Turn (name, in_features, out_features[, fan_in_fan_out]) of every linear layer into sites,
    warning on guesses."""
    sites: list[AdapterSite] = []
    guessed: list[str] = []
    for name, in_features, out_features, *transposed in linears:
        found = classify_module(name, model_type)
        if found is None:
            continue
        if found.heuristic:
            guessed.append(name)
        sites.append(
            AdapterSite(name, found.tower, found.layer, found.kind, in_features, out_features,
                        fan_in_fan_out=bool(transposed and transposed[0]))
        )  # fmt: skip
    if not sites:
        raise SiteError(
            f"model: no adaptable linear layers (nn.Linear or Conv1D) found (model type {model_type!r})"
        )
    if model_type not in KNOWN_MODEL_TYPES:
        warnings.warn(
            f"model type {model_type!r} is not a known architecture: {len(sites)} sites were found by "
            "name heuristics; check them with `ranktune plan --format table`",
            SiteHeuristicWarning,
            stacklevel=2,
        )
    elif guessed:
        warnings.warn(
            f"{len(guessed)} module kinds guessed from their names (e.g. {guessed[0]})",
            SiteHeuristicWarning,
            stacklevel=2,
        )
    return tuple(sites)


def kind_sort_key(kind: str) -> tuple[int, str]:
    """Canonical display order of module kinds: attention first, then the MLP, then the rest."""
    return (KIND_ORDER.index(kind), "") if kind in KIND_ORDER else (len(KIND_ORDER), kind)
