"""conversation: staff notes, public updates, questions, rider replies and nudges on a case (issue 16)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("question_id", sa.Integer(), nullable=True),
        sa.Column("photo_ids", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.case_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_case_message_case", "case_message", ["case_id", "id"], unique=False)
    op.add_column("case", sa.Column("nudges", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("case", sa.Column("nudged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("nudged_at")
        batch_op.drop_column("nudges")
    op.drop_index("ix_case_message_case", table_name="case_message")
    op.drop_table("case_message")
