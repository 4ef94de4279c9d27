"""Typed dependencies: ``SessionDep``, ``SettingsDep``, and principals checked for a role."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from service.auth import Principal, Scope, authenticate
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger("ranktune.auth")
bearer = HTTPBearer(auto_error=False, description="A token from `ranktune token create`")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_session(request: Request) -> Iterator[Session]:
    with get_sessions(request)() as session:
        yield session


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def current_principal(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    # Its own short session: the route's session must start its transaction itself (SQLite writes
    # begin with BEGIN IMMEDIATE, which has to be the transaction's first statement).
    with get_sessions(request)() as session:
        principal = authenticate(
            session, request.headers.get("authorization"), get_settings(request).is_loopback
        )
    if principal.open_mode and not getattr(request.app.state, "warned_open", False):
        request.app.state.warned_open = True
        log.warning("serving a request without a token: no API token exists (open mode on a loopback host)")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def requires(scope: Scope) -> Callable[[Principal], Principal]:
    def check(principal: CurrentPrincipal) -> Principal:
        principal.require(scope)
        return principal

    return check


UserPrincipal = Annotated[Principal, Depends(requires("user"))]
WorkerPrincipal = Annotated[Principal, Depends(requires("worker"))]
AdminPrincipal = Annotated[Principal, Depends(requires("admin"))]
