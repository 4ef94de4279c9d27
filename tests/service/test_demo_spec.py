"""The demo's spec as the API takes it, and ``ranktune demo --seed``: another seed, another search."""

from __future__ import annotations

import copy

from typer.testing import CliRunner

from ranktune.service.cli import app
from ranktune.service.demo import DEMO_SPEC, seeded
from ranktune.service.schemas.spec import SearchCreate


def test_the_demo_spec_is_a_valid_search() -> None:
    spec = SearchCreate.model_validate(DEMO_SPEC)
    assert spec.model == "builtin:tiny-vlm" and spec.task == "builtin:digits-vqa"
    assert spec.proxy.seed == 0


def test_a_seed_changes_the_searchs_seed_and_name_only() -> None:
    before = copy.deepcopy(DEMO_SPEC)
    spec = SearchCreate.model_validate(seeded(DEMO_SPEC, 3))
    assert spec.proxy.seed == 3 and spec.name.endswith("(seed 3)")
    assert spec.proxy.steps == DEMO_SPEC["proxy"]["steps"] and spec.budget.rank == DEMO_SPEC["budget"]["rank"]
    assert before == DEMO_SPEC  # the module's spec is left as it was
    assert seeded(DEMO_SPEC, 0) == DEMO_SPEC


def test_the_cli_refuses_a_negative_seed() -> None:
    result = CliRunner().invoke(app, ["demo", "--seed", "-1", "--exit"])
    assert result.exit_code == 2 and "--seed" in result.output
