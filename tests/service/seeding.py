"""Searches seeded through the REST API the way workers would fill them."""

from __future__ import annotations

import numpy as np

from ranktune.search.paired import encode_outcomes
from tests.service.api import Api


def seed_confirmed_search(user: Api, worker: Api, examples: int = 3000) -> int:
    """A search with confirmation whose workers send per-example outcomes: on each seed the confirmed
    schedule is right wherever uniform is, and on about 2.5 points more of the examples."""
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
        answer = worker.complete(job, accuracy=accuracy, outcomes=encode_outcomes(right))
        assert answer.status_code == 200, answer.text
    search_id: int = search["id"]
    return search_id
