"""Trained adapters of confirmation runs, and the parameter count of what an adapter exports.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-11 09:00:00

``trial_adapters`` holds, per confirmation trial, the zip a worker uploaded (PEFT's config and
weights); ``trials.exported_params`` is the written adapter's parameter count (below
``adapter_params`` when DMLoRA pruned branches). Existing rows have neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("exported_params", sa.BigInteger(), nullable=True))
    op.create_table(
        "trial_adapters",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name="fk_trial_adapters_trial_id_trials", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("trial_id", name="pk_trial_adapters"),
    )


def downgrade() -> None:
    op.drop_table("trial_adapters")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("exported_params")
