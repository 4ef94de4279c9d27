"""Fair sharing of claims between searches: a claim order per trial, the next one per search.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00

Claims take the queued trial with the lowest ``claim_order`` (``service.db.fair_share``) instead
of the oldest one. Trials queued before this revision are numbered 0, 1, 2 … within their search in
the order they were queued, and each search continues after its own, so the searches that were
waiting take turns at once instead of the oldest search's whole queue going first. Every other row
keeps order 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("next_claim_order", sa.Float(), server_default="0", nullable=False))
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("claim_order", sa.Float(), server_default="0", nullable=False))
    op.execute(
        "UPDATE trials SET claim_order = (SELECT count(*) FROM trials AS earlier "
        "WHERE earlier.search_id = trials.search_id AND earlier.state = 'queued' AND earlier.id < trials.id) "
        "WHERE state = 'queued'"
    )
    op.execute(
        "UPDATE searches SET next_claim_order = (SELECT count(*) FROM trials "
        "WHERE trials.search_id = searches.id AND trials.state = 'queued')"
    )
    op.drop_index("ix_trials_claim", table_name="trials")
    op.create_index("ix_trials_claim", "trials", ["state", "claim_order", "id"])


def downgrade() -> None:
    op.drop_index("ix_trials_claim", table_name="trials")
    op.create_index("ix_trials_claim", "trials", ["state", "id"])
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("claim_order")
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("next_claim_order")
