"""Every search's finished proxy trials, mirrored into an Optuna study so ``optuna-dashboard`` can open it.

Proposals are computed in ``search/`` from the frozen history (an in-memory study); this mirror is
for looking, and append-only: a finished trial never changes, so each is written once (its ranktune
number kept as the user attribute ``ranktune_trial``). ``ranktune optuna-sync`` runs ``sync`` in a
process of its own, never the API: writing Optuna trials is slow (it was 29% of the API's CPU under
load, and the lease sweep waited behind it). On PostgreSQL a pass holds an advisory lock, so two
``optuna-sync`` processes on one database never write a trial twice.

Where the studies live: Optuna's RDB storage has tables named ``trials`` and ``alembic_version``,
like ranktune's, so it cannot share one namespace with them. On PostgreSQL the studies go to the
schema ``ranktune_optuna`` of the same database (``storage_url`` gives the URL to open); on a SQLite
file, to a sibling file ``<name>.optuna.db``. An in-memory SQLite database has no mirror.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ranktune.service.db.models import Search, Trial
from ranktune.service.searching import stored_space

log = logging.getLogger("ranktune.optuna")
SCHEMA = "ranktune_optuna"
TRIAL_ATTR = "ranktune_trial"
FINISHED = ("succeeded", "pruned", "failed")
LOCK_KEY = 0x72616E6B  # pg advisory lock of a sync pass ("rank")
_STORAGES: dict[str, Any] = {}
_SYNCED: dict[tuple[str, int], int] = {}  # (storage, search) → finished trials mirrored
_LOCK = threading.Lock()


def storage_url(database_url: str) -> str | None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        name = url.database[: -len(".db")] if url.database.endswith(".db") else url.database
        return url.set(database=f"{name}.optuna.db").render_as_string(hide_password=False)
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(
            hide_password=False
        )
    return None


def study_name(search_id: int) -> str:
    return f"ranktune-search-{search_id}"


def _storage(engine: Engine, url: str) -> Any:
    import optuna

    with _LOCK:
        if url not in _STORAGES:
            if engine.dialect.name == "postgresql":
                with engine.begin() as connection:
                    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _STORAGES[url] = optuna.storages.RDBStorage(url)
        return _STORAGES[url]


def sync(engine: Engine, session: Session, database_url: str) -> int:
    """Write every finished proxy trial not yet mirrored; returns how many were written."""
    url = storage_url(database_url)
    if url is None:
        return 0
    if engine.dialect.name == "postgresql" and not session.scalar(
        select(func.pg_try_advisory_xact_lock(LOCK_KEY))
    ):
        session.rollback()
        log.info("another optuna-sync is mirroring this database; skipping this pass")
        return 0
    counts = session.execute(
        select(Trial.search_id, func.count())
        .where(Trial.kind == "proxy", Trial.state.in_(FINISHED), Trial.vector.is_not(None))
        .group_by(Trial.search_id)
    ).all()
    stale = [(search_id, count) for search_id, count in counts if _SYNCED.get((url, search_id)) != count]
    written = 0
    for search_id, count in stale:
        search = session.get(Search, search_id)
        if search is not None:
            written += _sync_search(_storage(engine, url), session, search)
            _SYNCED[(url, search_id)] = count
    session.rollback()
    return written


def _sync_search(storage: Any, session: Session, search: Search) -> int:
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finished = session.scalars(
        select(Trial)
        .where(
            Trial.search_id == search.id,
            Trial.kind == "proxy",
            Trial.state.in_(FINISHED),
            Trial.vector.is_not(None),
        )
        .order_by(Trial.number)
    ).all()
    study = optuna.create_study(
        storage=storage,
        study_name=study_name(search.id),
        direction="maximize" if search.objective_direction == "maximize" else "minimize",
        load_if_exists=True,
    )
    mirrored = {t.user_attrs.get(TRIAL_ATTR) for t in study.get_trials(deepcopy=False)}
    if not study.user_attrs:
        for key, value in (("search_name", search.name), ("model", search.spec.get("model")),
                           ("task", search.spec.get("task"))):  # fmt: skip
            study.set_user_attr(key, value)
    names = [d.name for d in stored_space(search.spec, search.sites).dimensions]
    distributions: dict[str, Any] = {n: FloatDistribution(0.0, 1.0) for n in names}
    written = 0
    for trial in finished:
        if trial.number in mirrored or not trial.vector or len(trial.vector) != len(names):
            continue
        state = {"succeeded": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(
            trial.state, TrialState.FAIL
        )
        study.add_trial(
            create_trial(
                params=dict(zip(names, (float(v) for v in trial.vector), strict=True)),
                distributions=distributions,
                value=trial.objective if state == TrialState.COMPLETE else None,
                state=state,
                user_attrs={
                    TRIAL_ATTR: trial.number,
                    "parameter_count": trial.parameter_count,
                    "proxy_seed": trial.proxy_seed,
                    # multi-fidelity: objectives of different rungs are of different lengths
                    **({"rung": trial.rung, "steps": trial.steps} if trial.steps is not None else {}),
                },
            )
        )
        written += 1
    return written


def close_storages() -> None:
    """Dispose of the cached storages' connection pools (tests; a server keeps them)."""
    with _LOCK:
        for storage in _STORAGES.values():
            storage.engine.dispose()
        _STORAGES.clear()
        _SYNCED.clear()
