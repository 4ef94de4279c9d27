"""``ranktune demo`` end to end on a small spec: embedded server, local worker thread, dynamic
re-allocation inside proxy trials, confirmation against uniform, PEFT export."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from rich.console import Console
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ranktune.search.schedule import RankSchedule
from ranktune.service.db.models import Trial
from ranktune.service.demo import DEMO_SPEC, run_demo

pytestmark = pytest.mark.slow


def test_demo_searches_confirms_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = copy.deepcopy(DEMO_SPEC)
    spec.update(
        max_trials=3,
        parallelism=2,
        proxy={**spec["proxy"], "steps": 6, "eval_every": 3},
        performance_model={"min_trials": 2},
        confirm={"top_k": 1, "steps": 4, "seeds": 1, "recheck": 0},
        dynamic={"at": [0.5]},
    )
    console = Console(record=True, width=140)
    search = run_demo(console, tmp_path / "out", exit_when_done=True, spec=spec)
    assert search["state"] == "finished"
    assert search["result"]["uniform"]["trial_number"] == 0
    assert search["best_objective"] == pytest.approx(search["result"]["winner"]["mean"])
    engine = create_engine(f"sqlite:///{tmp_path / 'out' / 'ranktune-demo.db'}")
    with Session(engine) as session:
        trials = session.scalars(select(Trial).order_by(Trial.number)).all()
        proxies = [t for t in trials if t.kind == "proxy"]
        confirms = [t for t in trials if t.kind == "confirm"]
        assert len(proxies) == 3 and all(t.state == "succeeded" for t in proxies)
        for trial in proxies:  # one re-allocation at half of the 6 steps, within the budget
            (event,) = trial.timeline or []
            assert event["step"] == 3 and event["source"] == "dynamic"
            count = RankSchedule.from_json(event["schedule"]).parameter_count
            assert search["budget_params"] * 0.97 <= count <= search["budget_params"]
        assert sorted(t.confirms for t in confirms)[0] == 0 and len(confirms) == 2
        uniform = next(t for t in confirms if t.confirms == 0)
        assert uniform.parameter_count == search["budget_params"]  # the baseline as such
        assert all(t.curve and t.curve[-1]["step"] == 4 for t in confirms)
        # Real workers send each example's outcome on the test split (digits-vqa: 800 questions).
        assert all(t.outcomes and t.outcomes.startswith("800:") for t in confirms)
    engine.dispose()
    text = console.export_text()
    progress = capsys.readouterr().err  # not a terminal: a line per finished trial instead of a bar
    assert "0/5 trials done" in progress and "5/5 trials done" in progress
    assert "best schedule (trial" in text and "language" in text
    assert "confirmed accuracy" in text and "uniform rank-2 LoRA" in text
    winner = search["result"]["winner"]["trial_number"]
    if winner != 0:  # a schedule won: paired with uniform over 1 seed x 800 examples
        assert search["result"]["paired"]["method"] == "examples (one seed)"
        assert "paired over 1 seed x 800 examples)" in text
    else:
        assert "uniform kept" in text
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    config.pop("peft_type")
    lora = LoraConfig(**config)
    assert lora.rank_pattern and all(key.startswith("^") for key in lora.rank_pattern)
    assert (tmp_path / "out" / "ranktune-demo.db").exists()
    assert_trained_weights_load(tmp_path / "out", search)


def assert_trained_weights_load(out: Path, search: dict) -> None:
    """The winner's best confirmation run's weights, as its worker uploaded them, load into PEFT whole."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from ranktune.trainer.tasks.registry import load_task

    weights = load_file(str(out / "adapter_model.safetensors"))
    task = load_task(search["spec"]["task"], search["spec"]["model"])
    loaded = PeftModel.from_pretrained(task.build_model(), str(out))
    state = {k.replace(".default", ""): v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert set(state) == set(weights), "every LoRA weight of the model is in the file, and nothing else"
    for key, value in weights.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    trained = [value.abs().sum() > 0 for key, value in weights.items() if "lora_B" in key]
    assert any(trained), "B starts at zero: trained weights, not the initialisation"
