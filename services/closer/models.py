"""The closer's tables: cases, their reports and timeline, staff accounts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Index, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from gridloop.plumbing import define_plumbing


class Base(SQLModel, registry=registry()):
    """The closer's tables: a MetaData of its own, so its migrations see only these."""

PLUMBING = define_plumbing(Base.metadata)


def _ts(nullable: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable)


class Case(Base, table=True):
    """One issue at one place, worked by one station from 立案 to 结案."""

    __tablename__ = "case"
    __table_args__ = (
        # the station queue: filter by station (and state), order by due time, then id (cursor)
        Index("ix_case_queue", "station_id", "status", "due_at", "case_id"),
        Index("ix_case_station_due", "station_id", "due_at", "case_id"),
    )

    case_id: str = Field(primary_key=True, max_length=40)
    station_id: str = Field(max_length=40)
    category: str = Field(max_length=40, index=True)
    status: str = Field(max_length=20)
    priority: str = Field(default="normal", max_length=10)
    triage: bool = False
    version: int = 1
    grid_id: str | None = Field(default=None, max_length=40)
    street_id: str | None = Field(default=None, max_length=40)
    place_id: str | None = Field(default=None, max_length=40)
    place_name: str | None = Field(default=None, max_length=120)
    lat: float | None = None
    lon: float | None = None
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    danger_now: bool = False
    route_reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    submitted_at: datetime = Field(sa_column=_ts())
    opened_at: datetime = Field(sa_column=_ts())
    updated_at: datetime = Field(sa_column=_ts())
    ack_due: datetime | None = Field(default=None, sa_column=_ts(True))
    resolve_due: datetime | None = Field(default=None, sa_column=_ts(True))
    due_at: datetime | None = Field(default=None, sa_column=_ts(True))
    acknowledged_at: datetime | None = Field(default=None, sa_column=_ts(True))
    dispatched_at: datetime | None = Field(default=None, sa_column=_ts(True))
    resolved_at: datetime | None = Field(default=None, sa_column=_ts(True))
    closed_at: datetime | None = Field(default=None, sa_column=_ts(True))
    distinct_riders: int = 1
    report_count: int = 1
    common_issue: bool = False


class CaseReport(Base, table=True):
    """A report in a case, and the event that told the reporter so (re-sent on redelivery)."""

    __tablename__ = "case_report"

    report_id: str = Field(primary_key=True, max_length=40)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    rider_ref: str | None = Field(default=None, max_length=80)
    submitted_at: datetime = Field(sa_column=_ts())
    event_id: str = Field(max_length=64)
    envelope: str = Field(sa_column=Column(Text, nullable=False))


class TimelineEntry(Base, table=True):
    """One step in a case's history."""

    __tablename__ = "timeline"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(foreign_key="case.case_id", index=True, max_length=40)
    at: datetime = Field(sa_column=_ts())
    action: str = Field(max_length=30)
    status: str = Field(max_length=20)
    actor: str = Field(default="system", max_length=60)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Staff(Base, table=True):
    """A staff account: grid staff, a centre supervisor, or an admin."""

    __tablename__ = "staff"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, max_length=60)
    display_name: str = Field(default="", max_length=80)
    password_hash: str = Field(max_length=200)
    role: str = Field(max_length=20)
    stations: str = Field(default="", max_length=400, description="Comma-separated station ids.")
    active: bool = True
    failed_logins: int = 0
    locked_until: datetime | None = Field(default=None, sa_column=_ts(True))
    created_at: datetime = Field(sa_column=_ts())

    @property
    def station_ids(self) -> list[str]:
        """The stations this account works for."""
        return [s for s in self.stations.split(",") if s]
