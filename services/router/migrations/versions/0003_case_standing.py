"""case index: distinct riders kept on the case; case_rider indexed by rider and by time

Routing used to re-read every report of a case to count its riders, a cost that grew with the
case. The count is now kept on the case row, and the two questions routing still asks of
case_rider (has this rider reported the case? which riders reported it within 24 h?) are index
lookups.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("open_case", schema=None) as batch_op:
        batch_op.add_column(sa.Column("distinct_riders", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("case_rider", schema=None) as batch_op:
        batch_op.create_index("ix_case_rider_case_rider", ["case_id", "rider_ref"], unique=False)
        batch_op.create_index("ix_case_rider_case_at", ["case_id", "at"], unique=False)
    op.execute(
        "UPDATE open_case SET distinct_riders = (SELECT count(DISTINCT r.rider_ref) FROM case_rider r "
        "WHERE r.case_id = open_case.case_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("case_rider", schema=None) as batch_op:
        batch_op.drop_index("ix_case_rider_case_at")
        batch_op.drop_index("ix_case_rider_case_rider")
    with op.batch_alter_table("open_case", schema=None) as batch_op:
        batch_op.drop_column("distinct_riders")
