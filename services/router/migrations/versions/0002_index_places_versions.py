"""case index: spatial and place indexes, case version, late merges; known places

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("open_case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("late_reports", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index("ix_open_case_cat_lat", ["category", "lat"], unique=False)
        batch_op.create_index("ix_open_case_place", ["place_id", "category"], unique=False)
    op.create_table(
        "known_place",
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("place_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("grid_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code"),
    )


def downgrade() -> None:
    op.drop_table("known_place")
    with op.batch_alter_table("open_case", schema=None) as batch_op:
        batch_op.drop_index("ix_open_case_place")
        batch_op.drop_index("ix_open_case_cat_lat")
        batch_op.drop_column("late_reports")
        batch_op.drop_column("version")
