"""after-photo bytes in the database (issue 13)

After-photos leave the replica's disk (var_dir/closer-photos) for the `case_photo_data` table, so
every replica serves every photo and the database backup covers them. Files written before this
revision are copied in by `gridloop closer import-photos` (run where the files are: each replica
may have kept some on its own disk, which a migration run on one host cannot see).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "case_photo_data",
        sa.Column("photo_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["photo_id"],
            ["case_photo.photo_id"],
        ),
        sa.PrimaryKeyConstraint("photo_id"),
    )


def downgrade() -> None:
    op.drop_table("case_photo_data")
