"""The proxy's options for larger models through the service and the CLI: a bad value is a 422 naming
``proxy.<field>`` (and writes nothing) or exit 2 with one line; a set option reaches the worker's
job, an unset one stays out of it (workers from before the options still run such searches); the
peak memory a worker reports lands on the trial."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from ranktune.service.app import create_app
from ranktune.service.cli import app
from ranktune.trainer.proxy import ProxySettings
from tests.service.api import SPEC, Api, make_settings, spec
from tests.service.conftest import databases_for
from tests.service.databases import row_counts

OPTIONS = ("grad_accum_steps", "gradient_checkpointing", "max_seq_len", "precision")
DEFAULTS = {"grad_accum_steps": 1, "gradient_checkpointing": False, "max_seq_len": None, "precision": "auto"}
runner = CliRunner()


def proxy(**values: Any) -> dict[str, Any]:
    return spec(proxy={**SPEC["proxy"], **values})


@pytest.fixture(scope="module")
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Api, str]]:
    """One SQLite database for the module: the checks are the spec's, the same on every backend
    (tests/service/test_spec_validation.py runs its table on PostgreSQL too)."""
    with (
        databases_for(request, "sqlite").fresh() as url,
        TestClient(create_app(make_settings(url))) as client,
    ):
        yield Api(client), url


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"grad_accum_steps": 0}, "grad_accum_steps", "greater than or equal to 1"),
        ({"grad_accum_steps": 2.5}, "grad_accum_steps", "integer"),
        ({"gradient_checkpointing": "yes"}, "gradient_checkpointing", "boolean"),
        ({"max_seq_len": 0}, "max_seq_len", "greater than or equal to 1"),
        ({"precision": "fp16"}, "precision", "'auto', 'fp32' or 'bf16'"),
        # digits-vqa's prompts hold image tokens: there is no text to cut
        (
            {"max_seq_len": 64},
            "max_seq_len",
            "proxy.max_seq_len: builtin:digits-vqa has no text it could cut",
        ),
    ],
)
def test_a_bad_option_is_a_422_on_its_field(
    served: tuple[Api, str], values: dict[str, Any], field: str, says: str
) -> None:
    api, database_url = served
    before = row_counts(database_url)
    response = api.post("/searches", proxy(**values))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "proxy", field] and says in detail["msg"], detail
    assert row_counts(database_url) == before


def test_a_model_that_cannot_checkpoint_is_a_422(
    served: tuple[Api, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    api, _ = served
    monkeypatch.setattr(transformers.LlavaForConditionalGeneration, "supports_gradient_checkpointing", False)
    response = api.post("/searches", proxy(gradient_checkpointing=True))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert detail["loc"] == ["body", "proxy", "gradient_checkpointing"]
    assert "LlavaForConditionalGeneration does not support gradient checkpointing" in detail["msg"]


def test_set_options_reach_the_job_and_unset_ones_stay_out(served: tuple[Api, str]) -> None:
    api, _ = served
    plain = api.submit(max_trials=1, parallelism=1)
    assert {k: plain["spec"]["proxy"][k] for k in OPTIONS} == DEFAULTS  # every default filled in
    job = api.claim()
    assert job is not None and not set(OPTIONS) & set(job["proxy"])
    assert api.complete(job, peak_memory_bytes=None).status_code == 200
    assert api.trials(plain["id"])[0]["peak_memory_bytes"] is None
    options = {
        "grad_accum_steps": 4,
        "gradient_checkpointing": True,
        "max_seq_len": None,
        "precision": "bf16",
    }
    sized = api.submit(max_trials=1, parallelism=1, proxy={**SPEC["proxy"], **options})
    job = api.claim()
    assert job is not None and job["search_id"] == sized["id"]
    assert job["proxy"] == {**SPEC["proxy"], "grad_accum_steps": 4, "gradient_checkpointing": True,
                            "precision": "bf16"}  # fmt: skip
    settings = ProxySettings(**job["proxy"])  # what the worker builds
    assert (settings.grad_accum_steps, settings.gradient_checkpointing, settings.precision) == (
        4,
        True,
        "bf16",
    )
    assert api.complete(job, peak_memory_bytes=3 * 2**30).status_code == 200
    assert api.trials(sized["id"])[0]["peak_memory_bytes"] == 3 * 2**30


BASE = ["train", "--model", "builtin:tiny-vlm", "--task", "builtin:digits-vqa", "--device", "cpu",
        "--uniform-rank", "2", "--out", "x"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grad-accum-steps", "0"], "proxy.grad_accum_steps: must be a whole number >= 1"),
        (["--precision", "fp16"], "proxy.precision: must be one of auto, fp32, bf16, got 'fp16'"),
        (["--max-seq-len", "0"], "proxy.max_seq_len: must be a whole number >= 1"),
        (["--max-seq-len", "32"], "proxy.max_seq_len: builtin:digits-vqa has no text it could cut"),
    ],
)
def test_cli_train_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*BASE, *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
