"""``ranktune demo``: a real rank search end to end on this machine, with nothing to set up.

An embedded API server (SQLite under the output directory, a free loopback port) and local worker
processes (``ranktune worker``, as on GPU nodes, one per trial in flight, one CPU thread each; their
logs go to ``worker-N.log`` there) run a search on ``builtin:tiny-vlm`` + ``builtin:digits-vqa`` at
the budget of uniform rank-2 LoRA with the best measured recipe at a tight budget (``perfmodel`` with
shape screening, its two best proxies re-run with another seed), then confirm the best schedule
against uniform at a longer length with six seeds, paired by seed and test question. The summary
shows the winner as a heatmap, its confirmed accuracy against uniform LoRA, and where its PEFT config
was written; the dashboard keeps serving until Ctrl-C (or returns at once with ``--exit``). The
database is kept, so a later demo warm-starts its performance model from the earlier ones (transfer).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from ranktune.search.confirm import describe_result
from ranktune.search.schedule import Budget, RankSchedule
from ranktune.service.api_client import wait_for, write_export
from ranktune.service.plan_view import print_schedule

MODEL, TASK = "builtin:tiny-vlm", "builtin:digits-vqa"
DEMO_SPEC: dict[str, Any] = {
    "name": "demo: tiny-vlm on digits-vqa",
    "model": MODEL,
    "task": TASK,
    "method": {"kind": "lora"},
    # A tight budget, where placement matters: the parameters of uniform rank-2 LoRA on all 54 sites.
    "budget": {"rank": 2},
    "space": {"grid": [0, 2, 4, 8, 16, 32]},
    "screen": True,
    "max_trials": 8,
    "parallelism": 2,
    "proxy": {"steps": 200, "lr": 0.001, "batch_size": 32, "seed": 0, "eval_every": 100},
    "performance_model": {"min_trials": 6},
    "confirm": {"top_k": 1, "steps": 300, "seeds": 6, "recheck": 2},
}


def run_demo(
    console: Console,
    out_dir: Path,
    port: int = 0,
    exit_when_done: bool = False,
    spec: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo search (``spec``: DEMO_SPEC by default) with search seed ``seed`` (its proxy seed:
    the sampler's and every proxy run's); returns the search as the API reports it."""
    spec = seeded(spec or DEMO_SPEC, seed)
    from ranktune.service.app import create_app
    from ranktune.service.db.migrate import upgrade_settings
    from ranktune.service.embedded import EmbeddedServer
    from ranktune.service.logs import configure_logging
    from ranktune.service.settings import Settings
    from ranktune.trainer.builtin.pretrain import load_tiny_vlm

    out_dir.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{out_dir.resolve() / 'ranktune-demo.db'}"
    settings = Settings(database_url=database, host="127.0.0.1", idle_retry_after_s=1)
    configure_logging("error", False)
    upgrade_settings(settings)
    with console.status("preparing the built-in tiny VLM (pretrained once on this machine, then cached)"):
        load_tiny_vlm()
    with EmbeddedServer(create_app(settings), port=port) as server:
        console.print(
            f"ranktune server on [bold]{server.url}[/] (dashboard), database {settings.database_url}"
        )
        workers = [start_worker(server.url, out_dir, n) for n in range(int(spec.get("parallelism", 1)))]
        try:
            with httpx.Client(base_url=server.url + "/api/v1", timeout=120) as client:
                search = _post(client, "/searches", spec)
                console.print(
                    f"search {search['id']}: {search['max_trials']} proxy trials of "
                    f"{spec['proxy']['steps']} steps, strategy {search['strategy']}, "
                    f"budget {search['budget_params']:,} params "
                    f"(uniform rank {search['budget_rank']}); then confirmation at full length"
                )
                search = wait_for(client, search, Console(stderr=True), poll_s=1.0)
                summarize(console, client, search, out_dir)
        finally:
            for worker in workers:
                stop_worker(worker)
        console.print(f"dashboard: [bold]{server.url}/#/searches/{search['id']}[/]")
        if not exit_when_done:
            console.print("serving the dashboard until Ctrl-C")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                console.print("stopped")
    return search


def seeded(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """``spec`` with search seed ``seed`` (named in the search's name when not 0)."""
    if seed == 0:
        return spec
    name = f"{spec['name']} (seed {seed})"
    return {**spec, "name": name, "proxy": {**spec.get("proxy", {}), "seed": seed}}


def start_worker(server_url: str, out_dir: Path, number: int) -> subprocess.Popen[bytes]:
    """``ranktune worker`` in its own process, as on a GPU node, on one CPU thread.

    Not a thread of this process: it would share the interpreter and the OpenMP runtime with the
    server's performance model, and on 2 cores proxy trials that followed a model refit ran 2-3x
    slower that way. One thread per worker, one worker per trial in flight: this model's small
    operations gain little from a second thread (a 60-step proxy took 10.9 s on 2 threads, 13.6 s
    on 1), so two 1-thread workers finish about 1.5x the trials of one 2-thread worker."""
    command = [sys.executable, "-m", "ranktune", "worker", "--server", server_url,
               "--device", "cpu", "--name", f"demo-worker-{number}",
               "--spool", str(out_dir / f"spool-{number}")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (out_dir / f"worker-{number}.log").open("ab") as log:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the worker hands back any trial it holds and exits 0; kill it if it does not."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def summarize(console: Console, client: httpx.Client, search: dict[str, Any], out_dir: Path) -> None:
    if search["state"] != "finished":
        console.print(f"[red]search {search['state']}[/]: {search.get('reason')}")
        return
    best = client.get(f"/searches/{search['id']}/best").json()
    schedule = RankSchedule.from_json(best["trial"]["schedule"])
    budget = Budget(params=search["budget_params"], uniform_rank=search["budget_rank"])
    print_schedule(
        console, schedule, budget, title=f"best schedule (trial {best['trial']['number']}): ", heat=True
    )
    result = search.get("result") or {}
    winner, uniform = result.get("winner"), result.get("uniform")
    if winner and uniform:
        console.print(
            f"confirmed accuracy ({search['spec']['confirm']['steps']} steps, {winner['seeds']} seeds, "
            f"test split held out from the search): winner {winner['mean']:.3f} ± {winner['std']:.3f}, "
            f"uniform rank-{search['budget_rank']} LoRA {uniform['mean']:.3f} ± {uniform['std']:.3f}"
        )
        console.print(f"confirmed: {describe_result(result)}", highlight=False)
    model = search.get("performance_model") or {}
    if model.get("spearman") is not None:
        console.print(
            f"performance model: cross-validated Spearman {model['spearman']:.2f}, MAE {model['mae']:.3f} "
            f"over {model['trials']} trials"
        )
    written = write_export(client, search["id"], out_dir)
    console.print(f"PEFT config (LoraConfig with rank_pattern) written to [bold]{written.config_path}[/]")
    if written.weights_path is not None:
        console.print(
            f"winner's trained weights (best confirmation run) written to [bold]{written.weights_path}[/]"
        )
