"""Searches seeded through the REST API the way workers would fill them."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors

from ranktune.search.paired import encode_outcomes
from ranktune.search.peft_format import to_peft_config
from ranktune.search.schedule import RankSchedule
from tests.service.api import Api


def seed_confirmed_search(user: Api, worker: Api, examples: int = 3000) -> int:
    """A search with confirmation whose workers send per-example outcomes: on each seed the confirmed
    schedule is right wherever uniform is, and on about 2.5 points more of the examples; its adapters
    as written hold a quarter fewer parameters than trained (``exported_params``). Confirmation runs
    upload their adapters (``adapter_archive``)."""
    search = user.submit(name="confirmed search", max_trials=3, parallelism=3, max_attempts=1,
                         confirm={"top_k": 1, "steps": 50, "seeds": 2})  # fmt: skip
    rng = np.random.default_rng(0)
    difficulty = rng.random(examples)
    uniform: dict[int, np.ndarray] = {}  # per seed: what uniform gets right
    while (job := worker.claim()) is not None:
        seed = job["proxy"]["seed"]
        right = uniform.setdefault(seed, rng.random(examples) > difficulty * 0.6)
        trial = next((t for t in user.trials(search["id"]) if t["id"] == job["trial_id"]), {})
        if trial.get("confirms"):  # a confirmation of a proxy trial other than the uniform trial 0
            right = right | (rng.random(examples) < 0.08)
        accuracy = 0.9 if job["kind"] == "proxy" and job["trial_number"] == 1 else float(right.mean())
        # The confirmed schedule's runs pruned a quarter of their parameters, as DMLoRA does.
        planned = RankSchedule.from_json(job["schedule"]).parameter_count
        counts = {"adapter_params": planned, "exported_params": planned}
        if trial.get("confirms"):
            counts["exported_params"] = planned * 3 // 4
        if job["upload_adapter"]:
            uploaded = worker.client.put(
                f"/api/v1/leases/{job['lease_id']}/adapter",
                params={"attempt": job["attempt"]},
                content=adapter_archive(job),
                headers={**worker.headers, "Content-Type": "application/zip"},
            )
            assert uploaded.status_code == 200, uploaded.text
        answer = worker.complete(job, accuracy=accuracy, outcomes=encode_outcomes(right), **counts)
        assert answer.status_code == 200, answer.text
    search_id: int = search["id"]
    return search_id


def adapter_archive(
    job: dict[str, Any], *, files: tuple[str, ...] = ("config", "weights"), pad: int = 0
) -> bytes:
    """A zip as a worker sends it, marked with the trial it came from."""
    config = {**to_peft_config(RankSchedule.from_json(job["schedule"])), "ranktune_trial": job["trial_id"]}
    weights = save_safetensors({"base_model.model.x.lora_A.weight": np.zeros((2, 4 + pad), np.float32)})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        if "config" in files:
            zipped.writestr("adapter_config.json", json.dumps(config))
        if "weights" in files:
            zipped.writestr("adapter_model.safetensors", weights)
    return buffer.getvalue()
