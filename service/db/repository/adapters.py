"""Trained adapters of confirmation runs: checked and stored as uploaded, kept for the winner only.

A confirmation run's worker uploads a zip of PEFT's ``adapter_config.json`` and
``adapter_model.safetensors`` (``leases.store_adapter``). When the search's confirmation ends, the
winner's best run keeps its adapter and every other run's is deleted, so a search stores one.
"""

from __future__ import annotations

import io
import json
import zipfile

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ranktune.service.db.models import Search, Trial, TrialAdapter
from ranktune.service.errors import InvalidInput

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_CONFIG_BYTES = 2**20


def _invalid(message: str) -> InvalidInput:
    return InvalidInput(f"body: {message}", field="body")


def check_archive(data: bytes, max_bytes: int) -> None:
    """A zip holding PEFT's two adapter files, unpacking to at most twice ``max_bytes``."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise _invalid(f"not a zip archive ({e})") from e
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        missing = [name for name in ADAPTER_FILES if name not in infos]
        if missing:
            raise _invalid(f"the archive lacks {', '.join(missing)} (it holds {sorted(infos) or 'nothing'})")
        unpacked = sum(info.file_size for info in infos.values())
        if unpacked > 2 * max_bytes:
            raise _invalid(f"the archive unpacks to {unpacked:,} bytes, more than twice the upload limit")
        if infos["adapter_config.json"].file_size > MAX_CONFIG_BYTES:
            raise _invalid("adapter_config.json is larger than 1 MiB")
        try:
            broken = archive.testzip()
            config = json.loads(archive.read("adapter_config.json"))
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise _invalid(f"the archive cannot be read ({e})") from e
        if broken is not None:
            raise _invalid(f"{broken} in the archive is corrupt")
        if not isinstance(config, dict) or not isinstance(config.get("rank_pattern", {}), dict):
            raise _invalid("adapter_config.json is not a PEFT LoraConfig object")


def winner_number(search: Search) -> int | None:
    """The proxy trial number the confirmation chose (0: uniform kept), once it is known."""
    winner = (search.result or {}).get("winner") or {}
    number = winner.get("trial_number")
    return int(number) if isinstance(number, int) else None


def winner_adapter(session: Session, search: Search) -> tuple[Trial, TrialAdapter] | None:
    """The stored adapter of the winner's best confirmation run (by the search's objective)."""
    number = winner_number(search)
    if number is None:
        return None
    rows = session.execute(
        select(Trial, TrialAdapter)
        .join(TrialAdapter, TrialAdapter.trial_id == Trial.id)
        .where(
            Trial.search_id == search.id,
            Trial.kind == "confirm",
            Trial.confirms == number,
            Trial.state == "succeeded",
        )
    ).all()
    scored = [(trial, adapter) for trial, adapter in rows if trial.objective is not None]
    if not scored:
        return None
    sign = -1.0 if search.objective_direction == "minimize" else 1.0
    return max(scored, key=lambda row: (sign * float(row[0].objective or 0.0), -row[0].id))


def keep_winner_only(session: Session, search: Search) -> None:
    """Delete every stored adapter of ``search`` but the winner's best run's (none without a winner)."""
    kept = winner_adapter(session, search)
    trial_ids = select(Trial.id).where(Trial.search_id == search.id)
    statement = delete(TrialAdapter).where(TrialAdapter.trial_id.in_(trial_ids))
    if kept is not None:
        statement = statement.where(TrialAdapter.trial_id != kept[0].id)
    session.execute(statement)
