"""duty roster: a street's shifts (值班), and who on duty a case went to out of hours (issue 15)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "duty_shift",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("street_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_duty_shift_street_end", "duty_shift", ["street_id", "end_at"], unique=False)
    op.add_column("case", sa.Column("duty_station_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
    op.add_column("case", sa.Column("duty_username", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True))
    op.create_index(
        "ix_case_duty_station", "case", ["duty_station_id", "is_active", "due_at", "case_id"], unique=False
    )
    op.create_index(
        "ix_case_duty_username", "case", ["duty_username", "is_active", "due_at", "case_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_case_duty_username", table_name="case")
    op.drop_index("ix_case_duty_station", table_name="case")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("duty_username")
        batch_op.drop_column("duty_station_id")
    op.drop_index("ix_duty_shift_street_end", table_name="duty_shift")
    op.drop_table("duty_shift")
