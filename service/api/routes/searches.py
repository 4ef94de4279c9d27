"""Searches and their trials: submit, list, read, cancel, best trial, PEFT export (role: user)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ranktune.search.confirm import describe_result
from ranktune.search.errors import RanktuneError
from ranktune.search.peft_format import to_peft_config
from ranktune.search.schedule import RankSchedule
from ranktune.service.api import API_PREFIX
from ranktune.service.api.deps import SessionDep, SettingsDep, UserPrincipal
from ranktune.service.api.errors import errors
from ranktune.service.api.openapi import DocumentedRoute
from ranktune.service.api.params import Offset, SearchId
from ranktune.service.db.models import Search, Trial
from ranktune.service.db.repository import adapters, searches
from ranktune.service.db.repository.trials import best_trial, list_trials
from ranktune.service.errors import Conflict, NotFound
from ranktune.service.schemas.searches import (
    BestTrial,
    Objective,
    PeftExport,
    SearchList,
    SearchPublic,
    SearchState,
    StoredAdapter,
    TrialList,
    TrialPublic,
    TrialState,
)
from ranktune.service.schemas.spec import SearchCreate
from ranktune.service.searching import prepare_search, stored_spec

router = APIRouter(prefix="/searches", tags=["searches"], route_class=DocumentedRoute)


def trial_public(trial: Trial, include_schedule: bool = True) -> TrialPublic:
    public = TrialPublic.model_validate(trial, from_attributes=True)
    return public if include_schedule else public.model_copy(update={"schedule": None})


@router.post("", status_code=201)
def submit_search(
    spec: SearchCreate, session: SessionDep, settings: SettingsDep, _: UserPrincipal
) -> SearchPublic:
    """Validate the spec, discover the model's adapter sites, store the search, queue its first trials."""
    prepared = prepare_search(spec, settings.lease_ttl_s)
    return searches.search_public(session, searches.create_search(session, prepared))


@router.get("")
def list_searches(
    session: SessionDep,
    _: UserPrincipal,
    state: SearchState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> SearchList:
    found = searches.list_searches(session, state, limit, offset)
    return SearchList(searches=[searches.search_public(session, s) for s in found])


@router.get("/{search_id}", responses=errors(404))
def get_search(search_id: SearchId, session: SessionDep, _: UserPrincipal) -> SearchPublic:
    return searches.search_public(session, searches.get_search(session, search_id))


@router.post("/{search_id}/cancel", responses=errors(404, 409))
def cancel_search(search_id: SearchId, session: SessionDep, _: UserPrincipal) -> SearchPublic:
    """Cancel queued trials; workers running the others get "stop" at their next heartbeat."""
    return searches.search_public(session, searches.cancel_search(session, search_id))


@router.get("/{search_id}/trials", responses=errors(404))
def get_trials(
    search_id: SearchId,
    session: SessionDep,
    _: UserPrincipal,
    state: TrialState | None = None,
    include_schedule: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Offset = 0,
) -> TrialList:
    searches.get_search(session, search_id)
    trials = list_trials(session, search_id, state, limit, offset)
    return TrialList(trials=[trial_public(t, include_schedule) for t in trials])


def _best(session: SessionDep, search: Search) -> Trial:
    trial = session.get(Trial, search.best_trial_id) if search.best_trial_id else best_trial(session, search)
    if trial is None:
        raise NotFound(f"search_id: no trial of search {search.id} has succeeded yet", field="search_id")
    return trial


@router.get("/{search_id}/best", responses=errors(404))
def get_best(search_id: SearchId, session: SessionDep, _: UserPrincipal) -> BestTrial:
    """The best succeeded trial by the objective: final once the search finished, so far before."""
    search = searches.get_search(session, search_id)
    trial = _best(session, search)
    objective = Objective(metric=search.objective_metric, direction=search.objective_direction)  # type: ignore[arg-type]
    confirmation = describe_result(search.result, search.objective_metric) if search.result else None
    return BestTrial(
        search_id=search.id,
        search_state=search.state,  # type: ignore[arg-type]
        objective=objective,
        trial=trial_public(trial),
        confirmation=confirmation,
    )


@router.get("/{search_id}/export/peft", responses=errors(404, 409))
def export_peft(search_id: SearchId, session: SessionDep, _: UserPrincipal) -> PeftExport:
    """The best trial's schedule as a PEFT ``LoraConfig`` dict (anchored rank/alpha patterns)."""
    search = searches.get_search(session, search_id)
    trial = _best(session, search)
    try:
        config = to_peft_config(
            RankSchedule.from_json(trial.schedule), lora_dropout=stored_spec(search.spec).method.dropout
        )
    except RanktuneError as e:
        raise Conflict(f"search_id: the best trial cannot be exported ({e})", field="search_id") from e
    stored = adapters.winner_adapter(session, search)
    adapter = None
    if stored is not None:
        run, weights = stored
        adapter = StoredAdapter(
            trial_id=run.id,
            confirm_seed=run.proxy_seed,
            objective=run.objective,
            size_bytes=weights.size_bytes,
            sha256=weights.sha256,
            url=f"{API_PREFIX}/searches/{search.id}/export/peft/adapter",
        )
    return PeftExport(
        search_id=search.id,
        trial_id=trial.id,
        trial_number=trial.number,
        objective=trial.objective,
        peft_config=config,
        adapter=adapter,
    )


@router.get(
    "/{search_id}/export/peft/adapter",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "adapter_config.json and weights, zipped"},
        **errors(404),
    },
)
def export_peft_adapter(search_id: SearchId, session: SessionDep, _: UserPrincipal) -> Response:
    """The trained weights of the confirmed winner's best run, as a zip for ``PeftModel.from_pretrained``
    once unpacked. 404 until a confirmation run of the winner uploaded them."""
    search = searches.get_search(session, search_id)
    stored = adapters.winner_adapter(session, search)
    if stored is None:
        raise NotFound(
            f"search_id: search {search.id} has no stored adapter weights (only a confirmed search keeps its "
            "winner's; train the exported schedule with `ranktune train --schedule`)",
            field="search_id",
        )
    run, weights = stored
    filename = f"ranktune-search-{search.id}-trial-{run.id}-adapter.zip"
    return Response(
        weights.data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "ETag": f'"{weights.sha256}"'},
    )
