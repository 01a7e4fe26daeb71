"""case view clock: the riders' view of a case keeps its SLA clock, shown as 24 小时处置 (issue 15)

Views kept before this revision came from cases on working time, so existing rows get "working".

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "case_view",
        sa.Column("clock", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False, server_default="working"),
    )


def downgrade() -> None:
    with op.batch_alter_table("case_view", schema=None) as batch_op:
        batch_op.drop_column("clock")
