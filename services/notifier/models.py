"""The notifier's tables: the deliveries (durable, one per event × channel), what it knows of each case,
and its copy of the staff accounts' token state.

Everything the sender works from lives here, none of it in process memory: a replica that takes over
the sender (leadership `sender`) carries on where the last one stopped.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import ROW_ID, define_plumbing
from gridloop.revocations import define_staff_token

PENDING, SENT, FAILED = "pending", "sent", "failed"
STATUSES = (PENDING, SENT, FAILED)


class Base(SQLModel, registry=registry()):
    """The notifier's tables: a MetaData of its own, so its migrations see only these."""


PLUMBING = define_plumbing(Base.metadata)
STAFF_TOKEN = define_staff_token(Base.metadata)


class Delivery(Base, table=True):
    """One notification of one event to one channel: pending until sent, or failed after its attempts."""

    __tablename__ = "delivery"
    __table_args__ = (
        # the dedup: one delivery per event and channel, whatever redelivers the event
        UniqueConstraint("event_id", "channel", name="uq_delivery_event_channel"),
        # the sender's query: pending rows that are due
        Index("ix_delivery_status_due", "status", "next_attempt_at"),
        Index("ix_delivery_channel_status", "channel", "status"),
        # the deliveries list of a supervisor or admin: its streets' stations, one state
        Index("ix_delivery_station_status", "station_id", "status"),
    )

    id: int | None = Field(default=None, sa_column=Column(ROW_ID, primary_key=True, autoincrement=True))
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=60)
    case_id: str = Field(max_length=40, index=True)
    rule_id: str = Field(max_length=48)
    channel: str = Field(sa_column=Column(Text, nullable=False), description="The Apprise URL (secret).")
    channel_kind: str = Field(max_length=20)
    target: str = Field(max_length=80, description="What the channel stands for: station:yh-s1, url.")
    title: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    link: str = Field(sa_column=Column(Text, nullable=False))
    event_time: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    status: str = Field(default=PENDING, max_length=10)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    digest_size: int | None = Field(default=None, description="Sent inside a grouped message of this many.")
    # who may see the row (gridloop/scope.py): the case's station, or a topic's street centre; None
    # when the notifier knew none (a row from before migration 0002 whose case it never saw)
    station_id: str | None = Field(default=None, max_length=40)
    street_id: str | None = Field(default=None, max_length=40)


class CaseInfo(Base, table=True):
    """What the notifier knows of a case from `cases.events`: enough to match rules and write a message."""

    __tablename__ = "case_info"

    case_id: str = Field(primary_key=True, max_length=40)
    category: str = Field(default="", max_length=40)
    station_id: str = Field(max_length=40)
    street_id: str | None = Field(default=None, max_length=40)
    place_name: str | None = Field(default=None, max_length=200)
    priority: str = Field(default="normal", max_length=10)
    clock: str = Field(default="working", max_length=10)
    status: str = Field(default="new", max_length=20)
    common_issue: bool = False
    ack_due: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    resolve_due: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    version: int = 0
