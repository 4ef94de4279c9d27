"""The fine-tune store of bench/search_quality.py: resumable, shared between processes, torn-line safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.search_quality import main
from bench.search_quality_runs import RunStore, run_key


def test_key_is_canonical() -> None:
    assert run_key(b=1, a=[2, 3]) == run_key(a=(2, 3), b=1) == '{"a":[2,3],"b":1}'
    assert run_key(a=1, seed=0) != run_key(a=1, seed=1)


def test_appended_records_are_seen_by_another_reader(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "runs.jsonl"
    writer, reader = RunStore(path), RunStore(path)
    assert reader.get("k1") is None and len(reader) == 0
    writer.put("k1", 0.5, 2.0, {"ranks": [1]})
    writer.put("k2", 0.25, 1.0)
    assert reader.get("k2") == {"key": "k2", "metric": 0.25, "wall_s": 1.0, "extra": {}}
    assert reader.get("k1") == {"key": "k1", "metric": 0.5, "wall_s": 2.0, "extra": {"ranks": [1]}}
    assert RunStore(path).records == writer.records  # a fresh reader loads the whole file


def test_a_torn_last_line_is_read_once_it_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    RunStore(path).put("k1", 1.0, 1.0)
    line = json.dumps({"key": "k2", "metric": 0.0, "wall_s": 1.0, "extra": {}})
    with open(path, "a") as handle:
        handle.write(line[:10])  # a writer killed mid-line, or still writing
    store = RunStore(path)
    assert list(store.records) == ["k1"]
    with open(path, "a") as handle:
        handle.write(line[10:] + "\n")
    assert store.get("k2") is not None


def test_in_memory_store_keeps_records_without_a_file() -> None:
    store = RunStore()
    store.put("k", 0.1, 0.2)
    assert store.get("k") is not None and len(store) == 1


def test_more_than_one_job_needs_a_store(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--jobs"):
        main(["--quick", "--jobs", "2"])
    with pytest.raises(SystemExit, match="--jobs"):
        main(["--quick", "--jobs", "0", "--store", "x.jsonl"])


def test_runs_known_before_training_are_listed_once() -> None:
    """Trial 0 of every search and every trial of a history-free strategy, deduplicated: uniform with
    search seed 0 trains proxy seeds 0-2 and with seed 1 seeds 1-3 (2 in common); random's trial 0 and
    tpe's are uniform with seed 0 again; tpe's later trials depend on results, so none is listed."""
    from bench.search_quality_bench import TaskBench
    from bench.search_quality_common import Config

    bench = TaskBench("tiny-vlm", Config(tasks=("tiny-vlm",), trials=3), progress=False)
    runs = bench.history_free_runs([("uniform", 0), ("uniform", 1), ("random", 0), ("tpe", 0)])
    uniform = bench.uniform.ranks
    assert runs[:4] == [(uniform, 0), (uniform, 1), (uniform, 2), (uniform, 3)]
    assert len(runs) == 6 and len(set(runs)) == 6
    assert all(seed == 0 and ranks != uniform for ranks, seed in runs[4:])  # random's own trials 1 and 2
