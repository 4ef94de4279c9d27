"""``ranktune train``: a real (short) fine-tune writes a PEFT adapter that PEFT loads; bad input exits 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ranktune.search.paired import decode_outcomes
from ranktune.search.schedule import RankSchedule
from ranktune.service.cli import app

runner = CliRunner()
BASE = ["train", "--model", "builtin:tiny-vlm", "--task", "builtin:digits-vqa", "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "dmlora"])
def test_train_writes_an_adapter_peft_loads(tmp_path: Path, method: str) -> None:
    from peft import PeftModel

    from ranktune.trainer.tasks.registry import load_task

    out = tmp_path / "adapter"
    result = runner.invoke(app, [*BASE, "--uniform-rank", "4", "--steps", "4", "--batch-size", "8",
                                 "--method", method, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    report = json.loads((out / "ranktune_result.json").read_text())
    assert report["steps_done"] == 4 and 0.0 <= report["metric"] <= 1.0
    assert report["examples"] == 800  # digits-vqa's val split: 400 images x 2 questions
    assert report["metric_se"] == pytest.approx(math.sqrt(report["metric"] * (1 - report["metric"]) / 800))
    assert np.mean(decode_outcomes(report["outcomes"])) == pytest.approx(report["metric"])
    assert "s.e., 800 val examples" in result.output
    task = load_task("builtin:digits-vqa", "builtin:tiny-vlm")
    loaded = PeftModel.from_pretrained(task.build_model(), str(out))
    ranks = {n: m.r["default"] for n, m in loaded.base_model.model.named_modules() if hasattr(m, "lora_A")}
    assert len(ranks) == 54 and set(ranks.values()) <= {1, 2, 3, 4}
    # The summary, the report and ranktune_schedule.json describe the adapter as written.
    written = RankSchedule.from_json(json.loads((out / "ranktune_schedule.json").read_text()))
    assert {s.name: r for s, r in written.active()} == ranks
    in_file = sum(t.numel() for t in load_file(str(out / "adapter_model.safetensors")).values())
    assert report["exported_params"] == written.parameter_count == in_file <= report["adapter_params"]
    summary = " ".join(result.output.split())
    if in_file < report["adapter_params"]:
        assert f"adapter params, written │ {in_file:,} (branches pruned)" in summary
    else:
        assert f"adapter params │ {in_file:,}" in summary
    batch = next(task.batches("val", 16, 0))
    with torch.no_grad():
        assert torch.isfinite(loaded(**{k: v for k, v in batch.items() if k != "labels"}).logits).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x"], "pass exactly one of --schedule FILE or --uniform-rank R"),
        (["--out", "x", "--uniform-rank", "0"], "--uniform-rank: must be >= 1"),
        (["--out", "x", "--schedule", "/no/such/plan.json"], "schedule: cannot read"),
        (["--out", "x", "--uniform-rank", "4", "--steps", "0"], "proxy.steps"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*BASE, *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_unknown_task_names_the_task() -> None:
    result = runner.invoke(app, ["train", "--model", "builtin:tiny-vlm", "--task", "builtin:nope",
                                 "--uniform-rank", "2", "--out", "x"])  # fmt: skip
    assert result.exit_code == 2 and "task" in result.stderr
