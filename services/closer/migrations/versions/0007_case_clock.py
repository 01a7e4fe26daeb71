"""case clock: each case records the SLA clock it counts on, working or calendar time (issue 15)

Cases opened before this revision counted working time, so existing rows get "working".

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "case",
        sa.Column("clock", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False, server_default="working"),
    )


def downgrade() -> None:
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("clock")
