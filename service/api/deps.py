"""Typed dependencies: ``SessionDep``, ``SettingsDep``, and principals checked for a role.

The dependencies are ``async``: FastAPI runs a plain ``def`` dependency on the thread pool, and
each of those hops cost more CPU than the dependency itself (about 0.5 ms a request in all). Only
what may block goes to the thread pool: a token lookup that the memo cannot answer, and closing a
session that still holds a connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from ranktune.service.auth import AuthMemo, Principal, Scope, authenticate, memoized_principal
from ranktune.service.metrics import ServiceMetrics
from ranktune.service.settings import Settings

log = logging.getLogger("ranktune.auth")
bearer = HTTPBearer(auto_error=False, description="A token from `ranktune token create`")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def settings_dependency(request: Request) -> Settings:
    return get_settings(request)


async def metrics_dependency(request: Request) -> ServiceMetrics:
    return get_metrics(request)


async def session_dependency(request: Request) -> AsyncIterator[Session]:
    """A session for the route; it takes a connection only when the route first queries."""
    session = get_sessions(request)()
    try:
        yield session
    finally:
        # A route that committed holds no connection, and closing costs nothing; otherwise the
        # rollback talks to the database, which must not block the event loop.
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SettingsDep = Annotated[Settings, Depends(settings_dependency)]
SessionDep = Annotated[Session, Depends(session_dependency)]
MetricsDep = Annotated[ServiceMetrics, Depends(metrics_dependency)]


def get_auth_memo(request: Request) -> AuthMemo:
    """The app's memo of principals (one per app: the open-mode answer belongs to its database)."""
    memo: AuthMemo | None = getattr(request.app.state, "auth_memo", None)
    if memo is None:
        # Two first requests may both build one; the loser's entries are merely looked up again.
        memo = request.app.state.auth_memo = AuthMemo(get_settings(request).auth_cache_s)
    return memo


def _look_up(request: Request, authorization: str | None, memo: AuthMemo) -> Principal:
    # Its own short session: the route's session must start its transaction itself (SQLite writes
    # begin with BEGIN IMMEDIATE, which has to be the transaction's first statement).
    with get_sessions(request)() as session:
        return authenticate(session, authorization, get_settings(request).open_policy, memo)


async def current_principal(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    authorization = request.headers.get("authorization")
    memo = get_auth_memo(request)
    principal = memoized_principal(authorization, get_settings(request).open_policy, memo)
    if principal is None:
        principal = await run_in_threadpool(_look_up, request, authorization, memo)
    if principal.open_mode and not getattr(request.app.state, "warned_open", False):
        request.app.state.warned_open = True
        log.warning(
            "serving a request without a token: open mode on a loopback host (no token was ever created, "
            "or RANKTUNE_OPEN_MODE=on)"
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def requires(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        principal.require(scope)
        return principal

    return check


UserPrincipal = Annotated[Principal, Depends(requires("user"))]
WorkerPrincipal = Annotated[Principal, Depends(requires("worker"))]
AdminPrincipal = Annotated[Principal, Depends(requires("admin"))]
