"""ledger pruning: processed_events indexed by processed_at (issue 13)

The pruner deletes ledger rows older than the dedup window, oldest first, in bounded batches; this
index makes each batch a range scan instead of a scan of the whole ledger. (Old sent outbox rows
are found through ix_outbox_unsent, which starts with sent_at.)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.create_index("ix_processed_events_processed_at", ["processed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.drop_index("ix_processed_events_processed_at")
