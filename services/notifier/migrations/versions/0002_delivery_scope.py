"""delivery scope: the station and street of each delivery, so the list is filtered by street

Existing rows take them from `case_info` where the notifier knows the case (its station now: a case
transferred since is listed to the street that has it); a topic's row (topic.*, its case_id the
topic's id) takes the centre station its target names. A row with neither stays NULL, which only an
account that sees every station lists (city, or an admin of every street: services/notifier/api.py).
The columns are written out here, not read from models.py, so this step never changes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:20:00
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
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        for name in ("station_id", "street_id"):
            batch_op.add_column(sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.create_index("ix_delivery_station_status", ["station_id", "status"], unique=False)
    delivery = sa.table(
        "delivery",
        sa.column("case_id", sa.String),
        sa.column("event_type", sa.String),
        sa.column("target", sa.String),
        sa.column("station_id", sa.String),
        sa.column("street_id", sa.String),
    )
    info = sa.table(
        "case_info",
        sa.column("case_id", sa.String),
        sa.column("station_id", sa.String),
        sa.column("street_id", sa.String),
    )
    known = sa.select(info.c.case_id)
    of_case = info.c.case_id == delivery.c.case_id
    op.execute(
        delivery.update()
        .where(delivery.c.event_type.like("case.%"), delivery.c.case_id.in_(known))
        .values(
            # a case first seen by a later event has station "" until its case.opened: no station
            station_id=sa.select(sa.func.nullif(info.c.station_id, "")).where(of_case).scalar_subquery(),
            street_id=sa.select(info.c.street_id).where(of_case).scalar_subquery(),
        )
    )
    # a topic's delivery names its centre station in its target ("centre:pp-centre", "station:…")
    for prefix in ("centre:", "station:"):
        op.execute(
            delivery.update()
            .where(delivery.c.event_type.like("topic.%"), delivery.c.target.like(prefix + "%"))
            .values(station_id=sa.func.substr(delivery.c.target, len(prefix) + 1))
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_station_status")
        batch_op.drop_column("street_id")
        batch_op.drop_column("station_id")
