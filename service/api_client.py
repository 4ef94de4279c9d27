"""A small client of the REST API: requests with one-line errors, specs read from files, and a
progress bar until a search ends. The CLI's client verbs and the demo use it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ranktune.search.errors import RanktuneError

DEFAULT_SERVER = "http://127.0.0.1:8600"


class ClientError(RanktuneError):
    field = "server"


def api(server: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.rstrip("/") + "/api/v1", headers=headers, timeout=30.0)


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    """One request; any failure becomes a one-line ClientError naming what went wrong."""
    response = request(client, method, path, **kwargs)
    return response.json() if response.content else None


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """``call`` without decoding the answer (for downloads)."""
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
    return response


@dataclass(frozen=True)
class Exported:
    """What ``write_export`` wrote: the best trial's schedule as a PEFT config, and the weights if stored."""

    export: dict[str, Any]
    config_path: Path
    weights_path: Path | None


def write_export(client: httpx.Client, search_id: int, out_dir: Path) -> Exported:
    """Write the search's PEFT adapter into ``out_dir``: ``adapter_config.json`` always, and
    ``adapter_model.safetensors`` when a confirmation run uploaded the winner's trained weights."""
    import hashlib
    import io
    import zipfile

    exported = call(client, "GET", f"/searches/{search_id}/export/peft")
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "adapter_config.json"
    stored = exported.get("adapter")
    if not stored:
        config_path.write_text(json.dumps(exported["peft_config"], indent=2))
        return Exported(exported, config_path, None)
    data = request(client, "GET", f"/searches/{search_id}/export/peft/adapter").content
    if hashlib.sha256(data).hexdigest() != stored["sha256"]:
        raise ClientError(f"server: the adapter of search {search_id} arrived damaged (sha256 differs)")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (out_dir / name).write_bytes(archive.read(name))
    return Exported(exported, config_path, out_dir / "adapter_model.safetensors")


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
    """Proxy trials plus, with confirmation, its rechecks and at most (top_k + 1) · seeds confirmation
    runs."""
    confirm = (search.get("spec") or {}).get("confirm")
    extra = (confirm["top_k"] + 1) * confirm["seeds"] + confirm.get("recheck", 0) if confirm else 0
    return int(search["max_trials"]) + extra


def wait_for(
    client: httpx.Client, search: dict[str, Any], console: Console, poll_s: float = 2.0
) -> dict[str, Any]:
    """Progress bar until the search ends: finished/total trials and the best metric so far.

    Where standard error is not a terminal (a CI log, a pipe) a bar cannot redraw, so one plain line
    is printed each time a trial ends instead."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started, reported = time.monotonic(), -1
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(search["name"], total=planned_trials(search))
        while True:
            search = call(client, "GET", f"/searches/{search['id']}")
            counts = search["trials"]
            done = sum(counts[k] for k in ("succeeded", "failed", "pruned", "cancelled"))
            best = search.get("best_objective")
            label = f"{search['name']} best={best:.4f}" if best is not None else search["name"]
            progress.update(bar, completed=done, description=f"{label} running={counts['running']}")
            if not console.is_terminal and done != reported:
                reported = done
                console.print(
                    f"{done}/{planned_trials(search)} trials done, running={counts['running']}, "
                    f"best={'-' if best is None else f'{best:.4f}'}, {time.monotonic() - started:.0f} s"
                )
            if search["state"] != "running":
                progress.update(bar, total=done)
                return search
            time.sleep(poll_s)
