"""Promotions that go on from the rung below: rung training states, and the step a trial went on from.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-13 09:00:00

``trial_checkpoints`` holds, per multi-fidelity rung trial, the training state its worker uploaded
(``trainer.resume``: trainable tensors and optimizer state); ``trials.resumed_from`` is the step a
promoted trial went on from (null: it trained from the start, as every existing trial did).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("resumed_from", sa.Integer(), nullable=True))
    op.create_table(
        "trial_checkpoints",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["trials.id"], name="fk_trial_checkpoints_trial_id_trials", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("trial_id", name="pk_trial_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("trial_checkpoints")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("resumed_from")
