"""Bearer tokens and roles.

A token is ``rt_`` + 43 url-safe characters (256 random bits); the database keeps only its sha256.
Roles: ``admin`` may do everything, ``user`` the user API (searches, trials, export, workers list),
``worker`` only the lease endpoints. Open mode: a server bound to a loopback host with no unrevoked
token accepts requests without a token (as admin) and says so in its log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.db.models import ApiToken
from service.errors import ServiceError

TOKEN_PREFIX = "rt_"
Role = Literal["admin", "user", "worker"]
Scope = Literal["admin", "user", "worker"]  # what an endpoint needs
SCOPES_OF_ROLE: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "user", "worker"}),
    "user": frozenset({"user"}),
    "worker": frozenset({"worker"}),
}


class Unauthorized(ServiceError):
    status_code = 401
    field = "Authorization"
    where = "header"


class Forbidden(ServiceError):
    status_code = 403
    field = "Authorization"
    where = "header"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role, or the open-mode stand-in."""

    name: str
    role: Role
    open_mode: bool = False

    def require(self, scope: Scope) -> None:
        if scope not in SCOPES_OF_ROLE[self.role]:
            raise Forbidden(
                f"Authorization: token {self.name!r} has role {self.role!r}; this endpoint needs "
                f"{'an admin' if scope == 'admin' else f'a {scope} or admin'} token"
            )


OPEN_PRINCIPAL = Principal(name="(open mode)", role="admin", open_mode=True)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def any_active_token(session: Session) -> bool:
    return bool(session.scalar(select(exists().where(ApiToken.revoked_at.is_(None)))))


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization: expected 'Bearer <token>'")
    return token.strip()


def authenticate(session: Session, authorization: str | None, loopback: bool) -> Principal:
    """The principal behind an ``Authorization`` header; a token, when given, is always checked."""
    token = bearer_token(authorization)
    if token is None:
        if loopback and not any_active_token(session):
            return OPEN_PRINCIPAL
        raise Unauthorized("Authorization: this endpoint needs a bearer token (ranktune token create)")
    digest = hash_token(token)
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # The lookup is by hash, so timing reveals nothing about the token; compare anyway for clarity.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("Authorization: unknown token")
    if row.revoked_at is not None:
        raise Unauthorized(f"Authorization: token {row.name!r} was revoked")
    return Principal(name=row.name, role=row.role)  # type: ignore[arg-type]
