"""API tokens: only their sha256 hashes are stored; the token itself is shown once, at creation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ranktune.service.auth import hash_token, new_token
from ranktune.service.db.engine import begin_write
from ranktune.service.db.models import ROLES, ApiToken
from ranktune.service.db.types import utcnow
from ranktune.service.errors import Conflict, InvalidInput, NotFound


def create_token(session: Session, name: str, role: str) -> tuple[ApiToken, str]:
    """A new token named ``name``; returns the row and the token (never stored in clear)."""
    if role not in ROLES:
        raise InvalidInput(f"role: must be one of {', '.join(ROLES)}, got {role!r}", field="role")
    token = new_token()
    begin_write(session)
    row = ApiToken(name=name, role=role, token_hash=hash_token(token), created_at=utcnow())
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"name: a token named {name!r} already exists", field="name") from None
    return row, token


def revoke_token(session: Session, name: str) -> ApiToken:
    begin_write(session)
    row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        session.rollback()
        raise NotFound(f"name: there is no token named {name!r}", field="name")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    session.commit()
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))
