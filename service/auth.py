"""Bearer tokens and roles.

A token is ``rt_`` + 43 url-safe characters (256 random bits); the database keeps only its sha256.
Roles: ``admin`` may do everything, ``user`` the user API (searches, trials, export, workers list),
``worker`` only the lease endpoints. Open mode: a server bound to a loopback host accepts requests
without a token (as admin) until the first token is created, and says so in its log. Revoking tokens
never opens it again (``RANKTUNE_OPEN_MODE=on`` does, explicitly; ``off`` never opens it).

Every request of a worker used to cost a token lookup (a pool checkout, a query, a rollback). An
``AuthMemo`` keeps each token's principal, and whether the server is open, for
``RANKTUNE_AUTH_CACHE_S`` seconds (default 2; 0 = look up every time). A token created or revoked
through this process (REST or the repository functions) takes effect at once: any change to an
``api_tokens`` row flushed or committed by a session of this process clears every memo. A change
made by another process (``ranktune token revoke``, another replica or API worker process) takes
effect within ``RANKTUNE_AUTH_CACHE_S`` seconds. Only successful lookups are kept: an unknown or
revoked token is looked up every time.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import event, exists, select
from sqlalchemy.orm import ORMExecuteState, Session

from ranktune.service.db.models import ApiToken
from ranktune.service.errors import ServiceError
from ranktune.service.memo import TtlMemo
from ranktune.service.settings import OpenPolicy

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


def any_token_created(session: Session) -> bool:
    """Whether a token was ever created; revoked ones count."""
    return session.scalar(select(ApiToken.id).limit(1)) is not None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization: expected 'Bearer <token>'")
    return token.strip()


@dataclass(eq=False)  # hashed by identity: memos live in a WeakSet
class AuthMemo:
    """Principals by token hash, and the open-mode answer, of one app (one database)."""

    ttl_s: float
    principals: TtlMemo[Principal] = field(init=False)
    open_mode: TtlMemo[bool] = field(init=False)

    def __post_init__(self) -> None:
        self.principals = TtlMemo(self.ttl_s)
        self.open_mode = TtlMemo(self.ttl_s)
        _MEMOS.add(self)

    def invalidate(self) -> None:
        self.principals.invalidate()
        self.open_mode.invalidate()


_MEMOS: weakref.WeakSet[AuthMemo] = weakref.WeakSet()
_TOKENS_CHANGED = "ranktune_tokens_changed"


def invalidate_auth_memos() -> None:
    """Forget every memoized principal and open-mode answer of this process."""
    for memo in list(_MEMOS):
        memo.invalidate()


def _is_token_row(obj: Any) -> bool:
    return isinstance(obj, ApiToken)


@event.listens_for(Session, "after_flush")
def _tokens_flushed(session: Session, _context: Any) -> None:
    # At flush, before commit: a lookup that runs in between reads the old row and is memoized
    # again, so the commit below clears once more.
    if any(map(_is_token_row, itertools.chain(session.new, session.dirty, session.deleted))):
        session.info[_TOKENS_CHANGED] = True
        invalidate_auth_memos()


@event.listens_for(Session, "do_orm_execute")
def _tokens_bulk_changed(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    if any(mapper.class_ is ApiToken for mapper in state.all_mappers):
        state.session.info[_TOKENS_CHANGED] = True
        invalidate_auth_memos()


@event.listens_for(Session, "after_commit")
def _tokens_committed(session: Session) -> None:
    if session.info.pop(_TOKENS_CHANGED, False):
        invalidate_auth_memos()


@event.listens_for(Session, "after_rollback")
def _tokens_rolled_back(session: Session) -> None:
    session.info.pop(_TOKENS_CHANGED, None)


def is_open(session: Session, policy: OpenPolicy, memo: AuthMemo | None = None) -> bool:
    """Whether a request without a token is served (as admin) under ``policy``."""
    if policy != "until_first_token":
        return policy == "always"
    if memo is None:
        return not any_token_created(session)
    known = memo.open_mode.get("open")
    if known is not None:
        return known
    generation = memo.open_mode.generation()
    answer = not any_token_created(session)
    memo.open_mode.put("open", answer, generation)
    return answer


def memoized_principal(authorization: str | None, policy: OpenPolicy, memo: AuthMemo) -> Principal | None:
    """The principal when it is decided without the database (a memoized token or open-mode
    answer, or no token where the policy decides alone), else None: then ``authenticate`` looks it up."""
    token = bearer_token(authorization)
    if token is None:
        if policy == "always":
            return OPEN_PRINCIPAL
        if policy == "never":
            raise Unauthorized("Authorization: this endpoint needs a bearer token (ranktune token create)")
        known = memo.open_mode.get("open")
        if known is None:
            return None
        if known:
            return OPEN_PRINCIPAL
        raise Unauthorized("Authorization: this endpoint needs a bearer token (ranktune token create)")
    return memo.principals.get(hash_token(token))


def authenticate(
    session: Session, authorization: str | None, policy: OpenPolicy, memo: AuthMemo | None = None
) -> Principal:
    """The principal behind an ``Authorization`` header; a token, when given, is always checked
    (against the database, or against ``memo`` for at most its TTL)."""
    token = bearer_token(authorization)
    if token is None:
        if is_open(session, policy, memo):
            return OPEN_PRINCIPAL
        raise Unauthorized("Authorization: this endpoint needs a bearer token (ranktune token create)")
    digest = hash_token(token)
    if memo is not None and (known := memo.principals.get(digest)) is not None:
        return known
    generation = memo.principals.generation() if memo is not None else 0
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # The lookup is by hash, so timing reveals nothing about the token; compare anyway for clarity.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise Unauthorized("Authorization: unknown token")
    if row.revoked_at is not None:
        raise Unauthorized(f"Authorization: token {row.name!r} was revoked")
    principal = Principal(name=row.name, role=row.role)  # type: ignore[arg-type]
    if memo is not None:
        memo.principals.put(digest, principal, generation)
    return principal
