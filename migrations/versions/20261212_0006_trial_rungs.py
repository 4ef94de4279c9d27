"""Multi-fidelity trials: the rung a trial trains at, the schedule it continues, and its steps.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12 09:00:00

A search with ``fidelity`` (successive halving) has one trial per schedule and rung: ``rung`` (0 for
every existing trial), ``config`` (the number of the trial that started the schedule at rung 0;
null for that trial itself and for every existing one) and ``steps`` (the rung's length; null: the
search's ``proxy.steps`` or ``confirm.steps``, as before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("rung", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("config", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("steps", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("steps")
        batch.drop_column("config")
        batch.drop_column("rung")
