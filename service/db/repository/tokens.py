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
    """Revoke the token named ``name``; the last active admin token cannot be revoked (409)."""
    begin_write(session)
    row = session.scalars(select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        session.rollback()
        raise NotFound(f"name: there is no token named {name!r}", field="name")
    if row.revoked_at is None:
        if row.role == "admin" and _active_admins(session) == [row.id]:
            session.rollback()
            raise Conflict(
                f"name: {name!r} is the last active admin token; create another admin token first "
                "(`ranktune token create --role admin --name NAME`), then revoke this one",
                field="name",
                where="path",
            )
        row.revoked_at = utcnow()
    session.commit()
    return row


def _active_admins(session: Session) -> list[int]:
    # Locked (PostgreSQL; SQLite writers are serialized): two admins revoking each other at once
    # must not both succeed. The second waits, then no longer sees the first one's row.
    query = select(ApiToken.id).where(ApiToken.role == "admin", ApiToken.revoked_at.is_(None))
    return list(session.scalars(query.order_by(ApiToken.id).with_for_update()))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))
