"""Workers list (role: user) and API tokens (role: admin)."""

from __future__ import annotations

from fastapi import APIRouter

from ranktune.service.api.deps import AdminPrincipal, SessionDep, UserPrincipal
from ranktune.service.api.errors import errors
from ranktune.service.api.openapi import DocumentedRoute
from ranktune.service.api.params import TokenName
from ranktune.service.db.repository import tokens
from ranktune.service.db.repository.workers import list_workers
from ranktune.service.schemas.admin import (
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenPublic,
    WorkerList,
    WorkerPublic,
)

router = APIRouter(route_class=DocumentedRoute)


@router.get("/workers", tags=["workers"])
def get_workers(session: SessionDep, _: UserPrincipal) -> WorkerList:
    return WorkerList(workers=[WorkerPublic.model_validate(w) for w in list_workers(session)])


@router.post("/tokens", status_code=201, tags=["tokens"], responses=errors(409))
def create_token(body: TokenCreate, session: SessionDep, _: AdminPrincipal) -> TokenCreated:
    """A new token; the answer is the only time it is shown."""
    row, token = tokens.create_token(session, body.name, body.role)
    return TokenCreated(
        name=row.name, role=body.role, created_at=row.created_at, revoked_at=None, token=token
    )


@router.get("/tokens", tags=["tokens"])
def list_tokens(session: SessionDep, _: AdminPrincipal) -> TokenList:
    return TokenList(tokens=[TokenPublic.model_validate(t) for t in tokens.list_tokens(session)])


@router.post("/tokens/{name}/revoke", tags=["tokens"], responses=errors(404, 409))
def revoke_token(name: TokenName, session: SessionDep, _: AdminPrincipal) -> TokenPublic:
    """Revoke a token; the last active admin token cannot be revoked (409): create another first."""
    return TokenPublic.model_validate(tokens.revoke_token(session, name))
