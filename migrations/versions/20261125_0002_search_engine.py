"""Search engine: performance-model quality per search; vector, prediction, confirmed trial per trial.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("performance_model", sa.JSON(), nullable=True))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("vector", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("predicted", sa.Float(), nullable=True))
        batch.add_column(sa.Column("confirms", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("confirms")
        batch.drop_column("predicted")
        batch.drop_column("vector")
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("performance_model")
