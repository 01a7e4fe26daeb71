"""staff streets: the streets a supervisor or admin belongs to (issue 17, street scoping)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # empty: the streets of the account's stations (gridloop.scope.account_streets)
    op.add_column(
        "staff",
        sa.Column("streets", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False, server_default=""),
    )


def downgrade() -> None:
    with op.batch_alter_table("staff", schema=None) as batch_op:
        batch_op.drop_column("streets")
