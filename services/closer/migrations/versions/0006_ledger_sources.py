"""ledger sources: processed_events keeps the record each event id was last handled from (issue 13)

A redelivered record (same topic and partition, at or before that offset) is skipped without
replaying its stored result; a new record with the same id (a re-drive) is still replayed
(gridloop/redelivery.py). Rows written before this revision have no source and are replayed as
before. Both columns are nullable, so adding them rewrites nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("processed_events", sa.Column("source_partition", sa.Integer(), nullable=True))
    op.add_column("processed_events", sa.Column("source_offset", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("processed_events", schema=None) as batch_op:
        batch_op.drop_column("source_offset")
        batch_op.drop_column("source_partition")
