"""Workers, tokens and health."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from ranktune.service.schemas.common import Name, PublicModel, StrictModel

Role = Literal["admin", "user", "worker"]


class WorkerPublic(PublicModel):
    id: int
    name: str
    device: str
    hostname: str
    last_seen: datetime
    current_trial_id: int | None
    trials_done: int
    created_at: datetime


class WorkerList(PublicModel):
    workers: list[WorkerPublic]


class TokenCreate(StrictModel):
    name: Name
    role: Role


class TokenPublic(PublicModel):
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str


class TokenList(PublicModel):
    tokens: list[TokenPublic]


class Health(PublicModel):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]
    revision: str | None
    head: str
    open_mode: bool
