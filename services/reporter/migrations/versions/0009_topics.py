"""topics (议题) on the tracking page: each topic as riders see it, and which case is in which (issue 17)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "topic_view",
        sa.Column("topic_id", _S(length=40), nullable=False),
        sa.Column("title", _S(length=500), nullable=False),
        sa.Column("body", _S(length=500), nullable=False),
        sa.Column("status", _S(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("held_on", _S(length=10), nullable=True),
        sa.Column("decision", _S(length=500), nullable=True),
        sa.Column("follow_up_due", _S(length=10), nullable=True),
        sa.Column("outcome", _S(length=500), nullable=True),
        sa.Column("resolves", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("topic_id"),
    )
    op.create_table(
        "topic_case_view",
        sa.Column("case_id", _S(length=40), nullable=False),
        sa.Column("topic_id", _S(length=40), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index(op.f("ix_topic_case_view_topic_id"), "topic_case_view", ["topic_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_topic_case_view_topic_id"), table_name="topic_case_view")
    op.drop_table("topic_case_view")
    op.drop_table("topic_view")
