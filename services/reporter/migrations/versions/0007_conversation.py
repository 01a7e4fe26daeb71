"""conversation: public updates and questions of a case, riders' replies (with photos) and nudges (issue 16)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00
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
    op.create_table(
        "case_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id", "message_id", name="uq_case_message_once"),
    )
    op.create_index(op.f("ix_case_message_case_id"), "case_message", ["case_id"], unique=False)
    op.create_table(
        "rider_reply",
        sa.Column("reply_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("report_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("question_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["report.report_id"]),
        sa.PrimaryKeyConstraint("reply_id"),
    )
    op.create_index(op.f("ix_rider_reply_report_id"), "rider_reply", ["report_id"], unique=False)
    op.add_column("report", sa.Column("nudged_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("photo", sa.Column("reply_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
    op.create_index(op.f("ix_photo_reply_id"), "photo", ["reply_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_photo_reply_id"), table_name="photo")
    with op.batch_alter_table("photo", schema=None) as batch_op:
        batch_op.drop_column("reply_id")
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.drop_column("nudged_at")
    op.drop_index(op.f("ix_rider_reply_report_id"), table_name="rider_reply")
    op.drop_table("rider_reply")
    op.drop_index(op.f("ix_case_message_case_id"), table_name="case_message")
    op.drop_table("case_message")
