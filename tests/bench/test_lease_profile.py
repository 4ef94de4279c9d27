"""The lease bench's profile summary reads py-spy's collapsed stacks into inclusive and self shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.lease_profile import find_py_spy, read_stacks, summary

SERVE = "serve (ranktune/service/server.py:10)"
COMPLETE = "complete (ranktune/service/db/leases.py:300)"
CLAIM = "claim (ranktune/service/db/leases.py:120)"
LOADS = "raw_decode (json/decoder.py:353)"
EXECUTE = "_execute_send (psycopg/_cursor_base.py:400)"


def test_summary_counts_each_sample_once_in_the_first_bucket_its_stack_reaches(tmp_path: Path) -> None:
    stacks = tmp_path / "server.txt"
    stacks.write_text(
        f"{SERVE};{COMPLETE};{LOADS} 6\n"
        f"{SERVE};{CLAIM};{EXECUTE} 3\n"
        f"{SERVE};{CLAIM};{LOADS} 1\n"
        "garbage without a count\n"
    )
    assert sum(read_stacks(stacks).values()) == 10
    text = summary(stacks)
    assert "10 samples" in text
    assert "| complete | 60% |" in text and "| claim | 40% |" in text
    assert "| `decoder.py:raw_decode` | 70.0% |" in text
    assert "| `_cursor_base.py:_execute_send` | 30.0% |" in text


def test_an_empty_profile_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "none.txt"
    empty.write_text("")
    assert summary(empty) == "no samples"


def test_profiling_without_py_spy_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(SystemExit, match="pip install py-spy"):
        find_py_spy()
