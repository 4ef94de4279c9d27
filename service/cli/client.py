"""Client verbs: ``worker``, ``submit``, ``status`` and ``export``.

They talk to a server over HTTP (``--server``, ``--token`` or ``RANKTUNE_SERVER``/``RANKTUNE_TOKEN``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ranktune.search.confirm import describe_result
from ranktune.service.api_client import (
    DEFAULT_SERVER,
    ClientError,
    api,
    call,
    planned_trials,
    read_spec,
    wait_for,
    write_export,
)
from ranktune.service.cli.common import err, out, user_errors


def describe(search: dict[str, Any]) -> str:
    """The confirmed gain with its interval (in points for an accuracy)."""
    metric = ((search.get("spec") or {}).get("objective") or {}).get("metric", "accuracy")
    return describe_result(search["result"], metric)


ServerOption = Annotated[str, typer.Option(envvar="RANKTUNE_SERVER", help="Server URL")]
TokenOption = Annotated[str | None, typer.Option(envvar="RANKTUNE_TOKEN", help="Bearer token")]


def submit(
    spec: Annotated[Path, typer.Argument(help="Search spec, .json or .yaml")],
    wait: Annotated[bool, typer.Option(help="Show progress until the search ends")] = False,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Submit a search."""
    with api(server, token) as client:
        search = call(client, "POST", "/searches", json=read_spec(spec))
        err.print(
            f"search {search['id']} submitted: {search['max_trials']} trials, "
            f"budget {search['budget_params']:,} params"
        )
        if wait:
            search = wait_for(client, search, err)
            err.print(
                f"search {search['id']} {search['state']}"
                + (f": {search['reason']}" if search["reason"] else "")
            )
            if search.get("result"):
                err.print(f"confirmed: {describe(search)}", highlight=False)
        out.print_json(data={"id": search["id"], "state": search["state"]})
        if wait and search["state"] == "failed":
            raise typer.Exit(1)


@user_errors
def status(
    search_id: Annotated[int | None, typer.Argument(help="One search; all when left out")] = None,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Show searches and their progress."""
    with api(server, token) as client:
        searches = (
            [call(client, "GET", f"/searches/{search_id}")]
            if search_id
            else call(client, "GET", "/searches")["searches"]
        )
        table = Table("id", "name", "state", "strategy", "done/total", "running", "best")
        for s in searches:
            counts = s["trials"]
            done = sum(counts[k] for k in ("succeeded", "failed", "pruned", "cancelled"))
            best = s.get("best_objective")
            table.add_row(str(s["id"]), s["name"], s["state"], s["strategy"], f"{done}/{planned_trials(s)}",
                          str(counts["running"]), "-" if best is None else f"{best:.4f}")  # fmt: skip
        out.print(table)
        for s in searches:
            if s["state"] == "failed" and s.get("reason"):
                out.print(f"search {s['id']} failed: {s['reason']}", highlight=False)
            elif search_id and s.get("result"):
                out.print(f"confirmed: {describe(s)}", highlight=False)


@user_errors
def export(
    search_id: Annotated[int, typer.Argument(help="The search whose best schedule to export")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Directory to write adapter_config.json into")],
    format: Annotated[str, typer.Option("--format", help="peft")] = "peft",
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Write the search's PEFT adapter: the best schedule (adapter_config.json, a LoraConfig with
    rank_pattern) and, for a confirmed search, the winner's trained weights (adapter_model.safetensors)."""
    if format != "peft":
        raise ClientError(f"--format: only 'peft' is supported, got {format!r}", field="format")
    with api(server, token) as client:
        written = write_export(client, search_id, out_dir)
    exported = written.export
    err.print(
        f"trial {exported['trial_number']} (objective {exported['objective']}) "
        f"written to {written.config_path}",
        highlight=False,
    )
    if written.weights_path is not None:
        run = exported["adapter"]
        err.print(
            f"trained weights of confirmation trial {run['trial_id']} (seed {run['confirm_seed']}, "
            f"objective {run['objective']}) written to {written.weights_path}: "
            "PeftModel.from_pretrained(base, out_dir) loads them",
            highlight=False,
        )
    else:
        err.print(
            "no trained weights are stored for this search (only confirmation runs upload them): "
            f"train the schedule with `ranktune train --schedule {written.config_path} …` to get them",
            highlight=False,
        )


@user_errors
def worker(
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda[:N]")] = "auto",
    max_trials: Annotated[int | None, typer.Option(help="Stop after this many trials")] = None,
    once: Annotated[bool, typer.Option(help="Run at most one trial, exit when there is none")] = False,
    name: Annotated[str | None, typer.Option(help="Worker name (default: host-pid)")] = None,
    spool: Annotated[Path | None, typer.Option(help="Directory for unsent results")] = None,
) -> None:
    """Pull trials from the server and run their proxy fine-tunes until stopped (SIGTERM exits 0)."""
    from ranktune.trainer.worker.loop import Worker, WorkerOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = WorkerOptions(
        server=server, token=token, device=device, max_trials=max_trials, once=once, spool_dir=spool
    )
    if name:
        options.name = name
    runner = Worker(options)
    runner.install_signal_handlers()
    raise typer.Exit(runner.run())
