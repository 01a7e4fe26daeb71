"""topics (议题): area-level common issues, their linked cases and meetings (issue 17)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "topic",
        sa.Column("topic_id", _S(length=40), nullable=False),
        sa.Column("street_id", _S(length=40), nullable=False),
        sa.Column("category", _S(length=40), nullable=True),
        sa.Column("title", _S(length=500), nullable=False),
        sa.Column("body", _S(length=500), nullable=False),
        sa.Column("status", _S(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("suggestion", _S(length=40), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("created_by", _S(length=60), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", _S(length=500), nullable=True),
        sa.Column("resolves", sa.Boolean(), nullable=False),
        sa.Column("closed_by", _S(length=60), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("topic_id"),
    )
    op.create_index("ix_topic_street_status", "topic", ["street_id", "status", "updated_at"], unique=False)
    op.create_table(
        "topic_case",
        sa.Column("case_id", _S(length=40), nullable=False),
        sa.Column("topic_id", _S(length=40), nullable=False),
        sa.Column("linked_by", _S(length=60), nullable=False),
        sa.Column("linked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["case.case_id"]),
        sa.ForeignKeyConstraint(["topic_id"], ["topic.topic_id"]),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_index("ix_topic_case_topic", "topic_case", ["topic_id"], unique=False)
    op.create_table(
        "topic_meeting",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic_id", _S(length=40), nullable=False),
        sa.Column("held_on", sa.Date(), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("decision", _S(length=500), nullable=False),
        sa.Column("follow_up_owner", _S(length=120), nullable=True),
        sa.Column("follow_up_due", sa.Date(), nullable=True),
        sa.Column("recorded_by", _S(length=60), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["topic_id"], ["topic.topic_id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_topic_meeting_topic", "topic_meeting", ["topic_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_topic_meeting_topic", table_name="topic_meeting")
    op.drop_table("topic_meeting")
    op.drop_index("ix_topic_case_topic", table_name="topic_case")
    op.drop_table("topic_case")
    op.drop_index("ix_topic_street_status", table_name="topic")
    op.drop_table("topic")
