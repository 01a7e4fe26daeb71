"""riders recognised: the rider number kept only as a keyed pseudonym; staff's thank-you (issue 17)

Existing rows with a rider number in clear get its pseudonym (the same HMAC as
services/reporter/riders.rider_no_ref, written out here so this step never changes), their stored
request hash is re-keyed (it was a plain digest of a request holding the number), and the clear
column is dropped. The numbers cannot come back: downgrade leaves the column empty.

The key is derived from the service secret: `gridloop db upgrade` uses the configured one
(GRIDLOOP_JWT_SECRET, or an existing var/jwt.secret), a caller of gridloop.migrate.upgrade may hand
it in; with rider numbers to convert and no secret, the migration stops (a made-up key would give
pseudonyms the service never computes).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 02:30:00
"""

import hashlib
import hmac
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import context, op

from gridloop.settings import derive_key

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def _secret() -> str:
    """The service secret: handed in, else configured (GRIDLOOP_JWT_SECRET, or an existing
    var/jwt.secret); never a new one, which would key the pseudonyms with a throwaway key."""
    given = context.config.attributes.get("secret")
    if given:
        return str(given)
    from gridloop.settings import get_settings

    settings = get_settings()
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.var_dir / "jwt.secret"
    if path.exists():
        return path.read_text().strip()
    raise RuntimeError(
        "reporter migration 0010 turns stored rider numbers into pseudonyms keyed with the service "
        "secret: run it with the services' GRIDLOOP_JWT_SECRET"
    )


def _pseudonym(key: bytes, platform: str | None, rider_no: str) -> str | None:
    number = rider_no.strip().upper()
    if not number:
        return None
    return hmac.new(key, f"{platform or ''}\x00{number}".encode(), hashlib.sha256).hexdigest()[:32]


def upgrade() -> None:
    op.add_column(
        "report", sa.Column("rider_no_ref", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
    )
    bind = op.get_bind()
    report = sa.table(
        "report",
        sa.column("report_id", sa.String),
        sa.column("platform", sa.String),
        sa.column("rider_no", sa.String),
        sa.column("rider_no_ref", sa.String),
        sa.column("request_hash", sa.String),
    )
    key: bytes | None = None
    last = ""
    while True:
        rows = bind.execute(
            sa.select(report.c.report_id, report.c.platform, report.c.rider_no, report.c.request_hash)
            .where(report.c.rider_no.is_not(None), report.c.report_id > last)
            .order_by(report.c.report_id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        # the secret is read only when there is a number to convert (a new database needs none)
        secret = _secret()
        key = key or derive_key(secret, "rider-number")
        rehash = derive_key(secret, "request-hash-rekeyed")
        for report_id, platform, rider_no, request_hash in rows:
            bind.execute(
                report.update()
                .where(report.c.report_id == report_id)
                .values(
                    rider_no_ref=_pseudonym(key, platform, rider_no),
                    request_hash=hmac.new(rehash, request_hash.encode(), hashlib.sha256).hexdigest(),
                    rider_no=None,
                )
            )
        last = rows[-1][0]
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.drop_column("rider_no")
    op.create_table(
        "rider_thanks",
        sa.Column("case_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("preset", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("case_id"),
    )


def downgrade() -> None:
    op.drop_table("rider_thanks")
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rider_no", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.drop_column("rider_no_ref")
