"""GPT-2 style models, whose linear layers are transformers' ``Conv1D`` (weights stored in×out): sites,
PEFT's ``fan_in_fan_out``, and a plan that trains through ``ranktune train`` and reloads into PEFT
with every key matched and the same outputs. (Merge, unmerge and reload per method on a tiny GPT-2
are in the tables of test_adapters.py and test_peft_export.py.)"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
import transformers as T
from typer.testing import CliRunner

from ranktune.search.peft_format import to_peft_config
from ranktune.search.schedule import RankSchedule
from ranktune.search.sites import AdapterSite, SiteHeuristicWarning
from ranktune.service.cli import app
from ranktune.trainer.adapters import AdapterMethod, inject_adapters
from ranktune.trainer.adapters.export import save_peft_adapter
from ranktune.trainer.adapters.inject import adapter_layers
from ranktune.trainer.sites import discover_sites
from ranktune.trainer.tasks.causal_lm import CausalLMTask
from ranktune.trainer.tasks.registry import load_task
from tests.tiny_models import tiny_gpt2
from tests.tiny_text_models import colour_rows, save_causal_lm, write_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_causal_lm(tmp_path_factory.mktemp("models") / "gpt2", "gpt2", chat=False)


def test_conv1d_layers_are_known_sites_that_say_fan_in_fan_out(gpt2: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteHeuristicWarning)  # gpt2 is a known architecture
        sites = discover_sites(str(gpt2))
    kinds = {(s.name.removeprefix(f"transformer.h.{s.layer}."), s.kind) for s in sites}
    assert kinds == {("attn.c_attn", "qkv"), ("attn.c_proj", "o"), ("mlp.c_fc", "fc1"), ("mlp.c_proj", "fc2")}
    shapes = {s.name: (s.in_features, s.out_features) for s in sites}
    assert shapes["transformer.h.1.attn.c_attn"] == (32, 96) and shapes["transformer.h.1.mlp.c_proj"] == (
        48,
        32,
    )
    assert len(sites) == 8 and all(s.fan_in_fan_out for s in sites)
    assert all(AdapterSite.from_json(s.to_json()) == s for s in sites)
    assert to_peft_config(RankSchedule.uniform(sites, 4))["fan_in_fan_out"] is True
    # Sites of nn.Linear keep the JSON and the PEFT config they had before Conv1D sites.
    linear = AdapterSite("model.layers.0.self_attn.q_proj", "language", 0, "q", 8, 8)
    assert "fan_in_fan_out" not in linear.to_json()
    assert "fan_in_fan_out" not in to_peft_config(RankSchedule.uniform((linear,), 4))


def test_peft_takes_the_export_without_correcting_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_gpt2()
    pristine = copy.deepcopy(model)
    schedule = RankSchedule.uniform(discover_sites(model), 4)
    inject_adapters(model, schedule, AdapterMethod("lora"))
    with torch.no_grad():
        for layer in adapter_layers(model).values():
            layer.lora_B.normal_(std=0.2)  # type: ignore[operator]
    ids = torch.randint(1, 60, (2, 9), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    save_peft_adapter(model, schedule, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = PeftModel.from_pretrained(pristine, str(tmp_path)).eval()
    assert not [w for w in caught if "fan_in_fan_out" in str(w.message)]
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "dmlora"])
def test_a_plan_trains_and_reloads_into_peft(tmp_path: Path, gpt2: Path, method: str) -> None:
    from peft import PeftModel

    plan = runner.invoke(app, ["plan", "--model", str(gpt2), "--budget-rank", "4", "--grid", "0,2,4,8",
                               "--strategy", "random", "--format", "json"])  # fmt: skip
    assert plan.exit_code == 0, plan.output
    (tmp_path / "plan.json").write_text(plan.stdout)
    data = write_dataset(tmp_path / "pc", colour_rows("completion"))
    out = tmp_path / "adapter"
    result = runner.invoke(app, ["train", "--model", str(gpt2), "--task", str(data), "--schedule",
                                 str(tmp_path / "plan.json"), "--method", method, "--steps", "3",
                                 "--batch-size", "3", "--grad-accum-steps", "2", "--device", "cpu",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = " ".join(result.output.split())
    assert "3 (each of 2 micro-batches of 3)" in summary and "precision │ fp32" in summary
    assert "MiB (process RSS)" in summary
    report = json.loads((out / "ranktune_result.json").read_text())
    assert report["peak_memory_bytes"] > 0 and report["precision"] == "fp32"
    assert json.loads((out / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    written = RankSchedule.from_json(json.loads((out / "ranktune_schedule.json").read_text()))
    loaded = PeftModel.from_pretrained(T.AutoModelForCausalLM.from_pretrained(gpt2), str(out))
    keys = loaded.load_adapter(str(out), adapter_name="check")
    assert keys.missing_keys == [] and keys.unexpected_keys == []
    ranks = {n.removeprefix("base_model.model."): m.r["default"]
             for n, m in loaded.named_modules() if hasattr(m, "lora_A")}  # fmt: skip
    assert ranks == {s.name: r for s, r in written.active()}
    loaded.set_adapter("default")
    task = load_task(str(data), str(gpt2))
    assert isinstance(task, CausalLMTask)
    assert float(task.evaluate_outcomes(loaded).mean()) == pytest.approx(report["metric"], rel=1e-5)
