"""A service's copy of the staff accounts' token state, kept from `staff.events`.

The closer owns the accounts; a service that takes staff bearer tokens (the reporter's admin API, the
notifier's) keeps, per username in its own `staff_token` table, the newest `staff.tokens_revoked` it
has seen (the highest token version; on a tie the later one), and `token_current` refuses tokens with
a lower `ver` or of an inactive account.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table

from gridloop.clock import as_utc
from gridloop.db import Database
from gridloop.rawsql import Raw, read_ts, statement
from gridloop.tokens import Principal
from schemas.events import StaffTokensRevoked


def define_staff_token(metadata: MetaData) -> Table:
    """Add the `staff_token` table (the newest `staff.tokens_revoked` per account) to a service's metadata."""
    return Table(
        "staff_token",
        metadata,
        Column("username", String(80), primary_key=True),
        Column("token_version", Integer, nullable=False, default=0),
        Column("active", Boolean, nullable=False, default=True),
        Column("at", DateTime(timezone=True), nullable=False),
    )


_ONE = statement("SELECT token_version, at FROM staff_token WHERE username = :username")
_STATE = statement("SELECT token_version, active FROM staff_token WHERE username = :username")
_INSERT = statement(
    "INSERT INTO staff_token (username, token_version, active, at) VALUES (:username, :version, :active, :at)"
)
_UPDATE = statement(
    "UPDATE staff_token SET token_version = :version, active = :active, at = :at WHERE username = :username"
)


def tokens_revoked(raw: Raw, data: StaffTokensRevoked) -> bool:
    """Keep the newest state of one account (a replay or an older event changes nothing); True when
    the row changed."""
    params = {
        "username": data.username,
        "version": data.token_version,
        "active": data.active,
        "at": raw.ts(data.at),
    }
    row = raw.first(_ONE, {"username": data.username})
    if row is None:
        raw.run(_INSERT, params)
        return True
    stored_version, stored_at = int(row[0]), read_ts(row[1])
    newer = data.token_version > stored_version or (
        data.token_version == stored_version and stored_at is not None and as_utc(data.at) > as_utc(stored_at)
    )
    if newer:
        raw.run(_UPDATE, params)
    return newer


def token_current(db: Database, principal: Principal) -> bool:
    """The account's newest `staff.tokens_revoked` state leaves this token valid (the TokenCheck of a
    service's staff routes); an account never revoked has no row."""
    with db.session() as session:
        row = Raw(session).first(_STATE, {"username": principal.username})
    return row is None or (bool(row[1]) and principal.version >= int(row[0]))
