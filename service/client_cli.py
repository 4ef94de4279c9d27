"""Client verbs of the ``ranktune`` CLI: ``worker``, ``submit``, ``status``, ``export``.

They talk to a server over HTTP (``--server``, ``--token`` or ``RANKTUNE_SERVER``/``RANKTUNE_TOKEN``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from search.errors import RanktuneError
from service.cli import app, err, out, user_errors

DEFAULT_SERVER = "http://127.0.0.1:8600"
ServerOption = Annotated[str, typer.Option(envvar="RANKTUNE_SERVER", help="Server URL")]
TokenOption = Annotated[str | None, typer.Option(envvar="RANKTUNE_TOKEN", help="Bearer token")]


class ClientError(RanktuneError):
    field = "server"


def api(server: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.rstrip("/") + "/api/v1", headers=headers, timeout=30.0)


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One request; any failure becomes a one-line ClientError naming what went wrong."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.TransportError as e:
        raise ClientError(f"server: cannot reach {client.base_url} ({e})") from e
    if response.status_code >= 400:
        try:
            detail = response.json()["detail"]
            first = detail[0] if isinstance(detail, list) else {"msg": detail, "loc": []}
            where = ".".join(str(p) for p in first.get("loc", []) if p != "body")
            message = f"{where}: {first['msg']}" if where else str(first["msg"])
        except (ValueError, KeyError, IndexError, TypeError):
            message = response.text[:300]
        raise ClientError(f"server answered {response.status_code}: {message}")
    return response.json() if response.content else None


def read_spec(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ClientError(f"spec: cannot read {path} ({e.strerror})", field="spec") from e
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as e:  # yaml.YAMLError and JSONDecodeError are both ValueErrors or subclass them
        raise ClientError(
            f"spec: {path} is not valid {path.suffix.lstrip('.') or 'JSON'} ({e})", field="spec"
        ) from e
    except Exception as e:
        raise ClientError(f"spec: {path} could not be parsed ({e})", field="spec") from e
    if not isinstance(data, dict):
        raise ClientError(f"spec: {path} must hold an object", field="spec")
    return data


def planned_trials(search: dict[str, Any]) -> int:
    """Proxy trials plus, with confirmation, at most (top_k + 1) · seeds confirmation runs."""
    confirm = (search.get("spec") or {}).get("confirm")
    extra = (confirm["top_k"] + 1) * confirm["seeds"] if confirm else 0
    return int(search["max_trials"]) + extra


def wait_for(client: httpx.Client, search: dict[str, Any], poll_s: float = 2.0) -> dict[str, Any]:
    """Progress bar until the search ends: finished/total trials and the best metric so far.

    Where standard error is not a terminal (a CI log, a pipe) a bar cannot redraw, so one plain line
    is printed each time a trial ends instead."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started, reported = time.monotonic(), -1
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(search["name"], total=planned_trials(search))
        while True:
            search = call(client, "GET", f"/searches/{search['id']}")
            counts = search["trials"]
            done = sum(counts[k] for k in ("succeeded", "failed", "pruned", "cancelled"))
            best = search.get("best_objective")
            label = f"{search['name']} best={best:.4f}" if best is not None else search["name"]
            progress.update(bar, completed=done, description=f"{label} running={counts['running']}")
            if not err.is_terminal and done != reported:
                reported = done
                err.print(
                    f"{done}/{planned_trials(search)} trials done, running={counts['running']}, "
                    f"best={'-' if best is None else f'{best:.4f}'}, {time.monotonic() - started:.0f} s"
                )
            if search["state"] != "running":
                progress.update(bar, total=done)
                return search
            time.sleep(poll_s)


@app.command()
@user_errors
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
            search = wait_for(client, search)
            err.print(
                f"search {search['id']} {search['state']}"
                + (f": {search['reason']}" if search["reason"] else "")
            )
        out.print_json(data={"id": search["id"], "state": search["state"]})
        if wait and search["state"] == "failed":
            raise typer.Exit(1)


@app.command()
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


@app.command()
@user_errors
def export(
    search_id: Annotated[int, typer.Argument(help="The search whose best schedule to export")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Directory to write adapter_config.json into")],
    format: Annotated[str, typer.Option("--format", help="peft")] = "peft",
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Write the best schedule as a PEFT adapter_config.json (LoraConfig with rank_pattern)."""
    if format != "peft":
        raise ClientError(f"--format: only 'peft' is supported, got {format!r}", field="format")
    with api(server, token) as client:
        exported = call(client, "GET", f"/searches/{search_id}/export/peft")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapter_config.json").write_text(json.dumps(exported["peft_config"], indent=2))
    err.print(
        f"trial {exported['trial_number']} (objective {exported['objective']}) "
        f"written to {out_dir / 'adapter_config.json'}"
    )


@app.command()
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
    from trainer.worker.loop import Worker, WorkerOptions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    options = WorkerOptions(
        server=server, token=token, device=device, max_trials=max_trials, once=once, spool_dir=spool
    )
    if name:
        options.name = name
    runner = Worker(options)
    runner.install_signal_handlers()
    raise typer.Exit(runner.run())
