"""Tables every service has: the outbox and the processed-event ledger (SQLAlchemy Core, for bulk work)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from annotated_types import Interval
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# SQLite only autoincrements INTEGER PRIMARY KEY; BigInteger elsewhere.
ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
MAX_ROW_ID = 2**63 - 1
"""The largest id a ROW_ID column holds (BIGINT): an API refuses a larger one before the database does
(SQLite's driver raises OverflowError, a 500)."""
RowId = Annotated[int, Interval(ge=1, le=MAX_ROW_ID)]
"""A row id as an API takes it (a path parameter): 1 to MAX_ROW_ID, else 422."""


@dataclass(frozen=True)
class PlumbingTables:
    """The outbox and processed-events tables of one service's metadata."""

    outbox: Table
    processed: Table


def define_plumbing(metadata: MetaData) -> PlumbingTables:
    """Add the outbox and processed-events tables to a service's metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column("id", ROW_ID, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("topic", String(100), nullable=False),
        Column("key", String(200), nullable=True),
        Column("payload", Text, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
    )
    # the relay's only query: unsent rows in insertion order
    Index("ix_outbox_unsent", outbox.c.sent_at, outbox.c.id)
    processed = Table(
        "processed_events",
        metadata,
        Column("event_id", String(64), primary_key=True),
        Column("consumer", String(100), primary_key=True),
        Column("topic", String(100), nullable=False),
        # the record the id was last handled from (with topic): a record at or before it in the same
        # partition is a redelivery, not a re-drive (gridloop/redelivery.py); NULL in rows older than that
        Column("source_partition", Integer, nullable=True),
        Column("source_offset", BigInteger, nullable=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )
    # the pruner's only query: ledger rows older than the dedup window (sent_at leads ix_outbox_unsent)
    Index("ix_processed_events_processed_at", processed.c.processed_at)
    return PlumbingTables(outbox=outbox, processed=processed)
