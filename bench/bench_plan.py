"""Planning speed on a 504-site model (a 72-layer Llama, built on the meta device).

Measures, in one run: site discovery from a config, building the search space, projecting one
search vector onto the grid (median of 200 random vectors, against the 5 ms goal), and the whole
``ranktune plan`` command as a user runs it (interpreter start and imports included, against 1 s).

Run: .venv/bin/python bench/bench_plan.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import transformers as T

from ranktune.search.schedule import Budget
from ranktune.search.space import HierarchicalSpace
from ranktune.trainer.sites import discover_sites

REPEATS = 200


def llama72() -> T.LlamaConfig:
    return T.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=72,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)  # fmt: skip


def timed(fn, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    config = llama72()
    discover_sites(config)  # warm the transformers imports
    sites = discover_sites(config)
    t_discover = timed(lambda: discover_sites(config), 5)
    budget = Budget.from_rank(sites, 8)
    t_space = timed(lambda: HierarchicalSpace(sites, budget), 20)
    space = HierarchicalSpace(sites, budget)
    rng = np.random.default_rng(0)
    vectors = [space.random_vector(rng) for _ in range(REPEATS)]
    it = iter(vectors)
    t_project = timed(lambda: space.to_schedule(next(it)), REPEATS)
    with tempfile.TemporaryDirectory() as tmp:
        config.architectures = ["LlamaForCausalLM"]
        config.save_pretrained(tmp)
        ranktune = str(Path(sys.executable).parent / "ranktune")
        cmd = [
            ranktune,
            "plan",
            "--model",
            tmp,
            "--budget-rank",
            "8",
            "--strategy",
            "random",
            "--format",
            "json",
        ]
        t_cli = timed(lambda: subprocess.run(cmd, check=True, capture_output=True), 3)
    rows = [
        ("sites discovered (meta build)", len(sites), f"{t_discover * 1e3:.1f} ms", "-"),
        ("search space built", len(space.dimensions), f"{t_space * 1e3:.2f} ms", "-"),
        (
            "vector -> schedule (median)",
            REPEATS,
            f"{t_project * 1e3:.2f} ms",
            f"{t_project / 0.005:.2f}x of 5 ms",
        ),
        ("`ranktune plan` end to end", 3, f"{t_cli:.2f} s", f"{t_cli / 1.0:.2f}x of 1 s"),
    ]
    print("| what | n | time | vs goal |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


if __name__ == "__main__":
    main()
