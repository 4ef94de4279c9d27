"""A worker's failure reason always fits what the server accepts (no NUL, bounded length)."""

from __future__ import annotations

from ranktune.service.schemas.leases import FailRequest
from ranktune.trainer.worker.loop import REASON_CHARS, reason_text


def test_reasons_are_cut_and_cleaned_to_what_the_server_accepts() -> None:
    raw = "RuntimeError: \x00bad\x00 " + "x" * 50_000
    text = reason_text(raw)
    assert "\x00" not in text and len(text) == REASON_CHARS and text.startswith("RuntimeError: bad ")
    assert text.endswith("...")
    FailRequest.model_validate({"attempt": 1, "reason": text, "retryable": False})  # no 422


def test_short_reasons_are_kept_as_they_are() -> None:
    assert reason_text("out of memory") == "out of memory"
