"""stats: the rider's platform on each report, cases closed on a rider's confirmation, the figures' indexes

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the figures' columns (services/closer/models.STATS_COLUMNS when this revision was written)
_INCLUDED = [
    "case_id",
    "grid_id",
    "category",
    "status",
    "report_count",
    "ack_due",
    "acknowledged_at",
    "resolve_due",
    "resolved_at",
    "closed_at",
    "returned_at",
    "reopen_count",
    "rating",
    "extensions_granted",
    "common_issue",
    "nudges",
    "rider_confirmed",
]


def upgrade() -> None:
    op.add_column(
        "case", sa.Column("rider_confirmed", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    # the cases closed so far on a rider's confirmation (the timeline's confirm step)
    op.execute(
        'UPDATE "case" SET rider_confirmed = TRUE WHERE case_id IN '
        "(SELECT case_id FROM timeline WHERE action = 'confirm')"
    )
    op.add_column(
        "case_report", sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
    )
    op.create_index(
        "ix_case_report_stats",
        "case_report",
        ["submitted_at", "platform"],
        unique=False,
        postgresql_include=["case_id", "fixed"],
    )
    op.create_index(
        "ix_case_stats", "case", ["submitted_at", "station_id"], unique=False, postgresql_include=_INCLUDED
    )


def downgrade() -> None:
    op.drop_index("ix_case_stats", table_name="case")
    op.drop_index("ix_case_report_stats", table_name="case_report")
    with op.batch_alter_table("case_report", schema=None) as batch_op:
        batch_op.drop_column("platform")
    with op.batch_alter_table("case", schema=None) as batch_op:
        batch_op.drop_column("rider_confirmed")
