"""Rank schedules to and from PEFT configs.

Export writes a ``LoraConfig`` dict whose ``rank_pattern``/``alpha_pattern`` keys are anchored,
escaped full module names: PEFT matches them with ``re.match(r"(.*\\.)?(KEY)$", name)``, and the
leading ``^`` lets only the exact module match, so no site falls back to the default ``r``.
Import reads LoRA and AdaLoRA configs back, following PEFT's own matching rules.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ranktune.search.errors import ScheduleError
from ranktune.search.schedule import AlphaRule, RankSchedule
from ranktune.search.sites import AdapterSite


def anchored(name: str) -> str:
    return "^" + re.escape(name) + "$"


def to_peft_config(schedule: RankSchedule, *, lora_dropout: float = 0.0) -> dict[str, Any]:
    """A ``peft.LoraConfig(**d)``-ready dict that reproduces exactly the schedule's ranks."""
    active = list(schedule.active())
    if not active:
        raise ScheduleError("schedule: every rank is 0, there is no adapter to export")
    counts = Counter(rank for _, rank in active)
    default_rank = min(counts, key=lambda r: (-counts[r], r))
    alpha = schedule.alpha
    config: dict[str, Any] = {
        "peft_type": "LORA",
        "target_modules": [site.name for site, _ in active],
        "r": default_rank,
        "lora_alpha": alpha.alpha_for(default_rank),
        "rank_pattern": {anchored(site.name): rank for site, rank in active},
        "alpha_pattern": {},
        "use_rslora": alpha.kind == "rslora",
        "lora_dropout": lora_dropout,
        "bias": "none",
    }
    if alpha.kind == "ratio":
        config["alpha_pattern"] = {anchored(site.name): alpha.alpha_for(rank) for site, rank in active}
    if any(site.fan_in_fan_out for site, _ in active):
        # GPT-2's Conv1D stores its weight in×out; PEFT merges the transposed update when told so.
        # The flag is one per config: PEFT turns it off again (with a warning) for any nn.Linear.
        config["fan_in_fan_out"] = True
    return config


def peft_pattern_key(patterns: Sequence[str], name: str) -> str | None:
    """The pattern PEFT would pick for module ``name`` (its first match), or None."""
    for pattern in patterns:
        if re.match(rf"(.*\.)?({pattern})$", name):
            return pattern
    return None


def _targets(config: Mapping[str, Any], sites: Sequence[AdapterSite]) -> list[AdapterSite]:
    targets = config.get("target_modules")
    if targets is None:
        raise ScheduleError("target_modules: the PEFT config names no target modules", field="target_modules")
    if targets == "all-linear":
        chosen = list(sites)
    elif isinstance(targets, str):
        chosen = [s for s in sites if re.fullmatch(targets, s.name)]
    else:
        chosen = []
        for target in targets:
            hits = [s for s in sites if s.name == target or s.name.endswith("." + target)]
            if not hits:
                raise ScheduleError(
                    f"target_modules: {target!r} matches no adapter site of this model",
                    field="target_modules",
                )
            chosen.extend(h for h in hits if h not in chosen)
    excluded = config.get("exclude_modules") or []
    if isinstance(excluded, str):
        chosen = [s for s in chosen if not re.fullmatch(excluded, s.name)]
    else:
        chosen = [s for s in chosen if not any(s.name == e or s.name.endswith("." + e) for e in excluded)]
    if not chosen:
        raise ScheduleError("target_modules: matches no adapter site of this model", field="target_modules")
    return chosen


def _adalora_ranks(config: Mapping[str, Any]) -> dict[str, int]:
    """AdaLoRA saves a boolean mask per ``…<module>.lora_E[.adapter]``; its rank is the mask's sum."""
    ranks: dict[str, int] = {}
    for key, mask in (config.get("rank_pattern") or {}).items():
        name = re.sub(r"^base_model\.model\.", "", key)
        name = re.sub(r"\.lora_E(\.[^.]+)?$", "", name)
        ranks[name] = int(sum(bool(m) for m in mask)) if isinstance(mask, list) else int(mask)
    return ranks


def _alpha_rule(config: Mapping[str, Any], ranks: Mapping[str, int]) -> AlphaRule:
    r = int(config.get("r", 8))
    lora_alpha = float(config.get("lora_alpha", 8))
    if config.get("use_rslora"):
        return AlphaRule("rslora", lora_alpha)
    ratio = lora_alpha / r if r else 1.0
    pattern = config.get("alpha_pattern") or {}
    ratios = set()
    for name, rank in ranks.items():
        key = peft_pattern_key(list(pattern), name)
        if key is not None and rank > 0:
            ratios.add(round(float(pattern[key]) / rank, 9))
    if len(ratios) > 1:
        raise ScheduleError(
            "alpha_pattern: per-site alpha/r differs between sites; ranktune keeps alpha/r constant",
            field="alpha_pattern",
        )
    return AlphaRule("ratio", ratios.pop() if ratios else ratio)


def from_peft_config(config: Mapping[str, Any], sites: Sequence[AdapterSite]) -> RankSchedule:
    """Read a LoRA or AdaLoRA config (dict or ``adapter_config.json`` content) as a schedule."""
    peft_type = str(config.get("peft_type", "LORA")).upper()
    targets = _targets(config, sites)
    if peft_type == "LORA":
        patterns = config.get("rank_pattern") or {}
        default = int(config.get("r", 8))
        ranks = {}
        for site in targets:
            key = peft_pattern_key(list(patterns), site.name)
            ranks[site.name] = int(patterns[key]) if key is not None else default
    elif peft_type == "ADALORA":
        allocated = _adalora_ranks(config)
        init_r = int(config.get("init_r", 12))
        ranks = {site.name: allocated.get(site.name, init_r) for site in targets}
    else:
        raise ScheduleError(f"peft_type: {peft_type!r} is not LORA or ADALORA", field="peft_type")
    return RankSchedule.from_mapping(sites, ranks, _alpha_rule(config, ranks))


def load_peft_config(path: str | Path) -> dict[str, Any]:
    """Read ``adapter_config.json`` from a file or an adapter directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "adapter_config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ScheduleError(f"peft config: cannot read {path} ({e})", field="path") from e
    if not isinstance(data, dict):
        raise ScheduleError(f"peft config: {path} does not hold a JSON object", field="path")
    return data
