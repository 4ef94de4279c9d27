"""Per-example outcomes of a trial's final evaluation, for paired confirmation statistics.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 02:00:00

Rows written before this revision keep ``outcomes`` NULL: their confirmations are compared paired by
seed only (``search.paired``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("outcomes", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("outcomes")
